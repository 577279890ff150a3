"""The broker names a problem when its proxy does not report its counters in time.

In-process, real ZeroMQ: the broker runs in a thread with its status port;
between its status requests and its proxy sits a relay (ROUTER/DEALER, the
broker's own context) that can hold the proxy's statistics requests, so the
proxy "does not answer" exactly when the test says, and the problem is read
through the real status port.
"""

from __future__ import annotations

import threading

import zmq
from expecter import expect

from support.daemons import free_ports
from zibrato.broker import Broker
from zibrato.runtime import ask_status


class Relay:
    """Forwards the broker's control requests to its proxy, except STATISTICS while :attr:`hold` is set:
    those it keeps, unanswered, as a proxy too busy to report would."""

    def __init__(self, context: zmq.Context, proxy_endpoint: str) -> None:
        self.endpoint = f"inproc://relay-{id(self)}"
        self.hold = threading.Event()
        self.held = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(context, proxy_endpoint), daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self, context: zmq.Context, proxy_endpoint: str) -> None:
        front, back = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
        front.bind(self.endpoint)
        back.connect(proxy_endpoint)
        self._ready.set()
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        try:
            while True:
                for socket, _ in poller.poll(100):
                    if socket is back:
                        front.send_multipart(back.recv_multipart())
                        continue
                    frames = front.recv_multipart()
                    if self.hold.is_set() and frames[-1] == b"STATISTICS":
                        self.held += 1
                        continue
                    back.send_multipart(frames)
        except zmq.ContextTerminated:  # the broker stopped: its context.term() waits for these sockets
            pass
        finally:
            front.close(linger=0)
            back.close(linger=0)


class RelayedBroker(Broker):
    """A broker whose control requests go through a :class:`Relay` (its public seam: control_requests)."""

    relay: Relay

    def control_requests(self) -> zmq.Socket:
        requests = super().control_requests()
        proxy = f"inproc://broker-control-{id(self)}"  # where the proxy's control socket is bound
        self.relay = Relay(self.context, proxy)
        requests.disconnect(proxy)
        requests.connect(self.relay.endpoint)
        return requests


PROBLEM = "the proxy did not report its counters within 0.3 s"


def test_the_broker_names_a_proxy_that_does_not_report_its_counters_in_time():
    port = free_ports(3)
    broker = RelayedBroker(port=port, status_port=port + 2, startup_grace=0)
    broker.control_timeout = 0.3
    stop = threading.Event()
    running = threading.Thread(target=broker.run, args=(stop,), daemon=True)
    running.start()
    try:
        expect(broker.wait_ready(5)) == True
        answering = ask_status("127.0.0.1", port + 2, 5)
        expect(answering["healthy"]) == True
        expect(answering["received"]) == 0
        broker.relay.hold.set()
        silent = ask_status("127.0.0.1", port + 2, 5)
        expect(broker.relay.held) == 1
        expect(silent["healthy"]) == False
        expect(silent["problems"]) == [PROBLEM]
        expect(silent["received"]) == None  # no counters, rather than made-up zeros
        broker.relay.hold.clear()
        again = ask_status("127.0.0.1", port + 2, 5)
        expect(again["healthy"]) == True
        expect(again["problems"]) == []
    finally:
        stop.set()
        running.join(10)
    expect(running.is_alive()) == False
