"""zibrato-listen: let existing statsd/DogStatsD clients and l2met log lines feed Zibrato.

The pure parsers (:mod:`.statsd`, :mod:`.l2met`) turn bytes into series and
values, counting what they reject; the servers (:mod:`.servers`) own the
sockets and the loop, the drain (:mod:`.drain`) the l2met HTTP endpoint;
the publisher (:mod:`.publisher`) batches the parsed values into
Protocol 1.1 records and PUSHes them to the broker like any client, never
blocking. docs/INGRESS.md states the grammar and every choice made where
the peers disagree.
"""
