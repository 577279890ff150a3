/*
 * Zibrato test backend for the real Etsy statsd (npm `statsd` 0.9.0).
 *
 * Appends one JSON object per flush, one per line, to `config.captureFile`
 * (required). Loaded by tests/support/etsy_statsd.py through
 * `backends: ["/abs/path/capture_backend.js"]`.
 *
 * Each line holds:
 *   pid, seq (1, 2, ... per statsd process), timestamp (statsd's, Unix seconds),
 *   wall_ms (Date.now() when written), flushInterval (ms),
 *   counters, counter_rates, gauges, sets (name -> sorted list of members),
 *   timers (name -> raw values; statsd has already SORTED them in place, so this
 *           is not arrival order), timer_counters (sample-rate-scaled counts),
 *   timer_data (statsd's computed stats per timer), pctThreshold,
 *   statsd (statsd's own metrics, see below).
 *
 * statsd's internal metrics are NOT mixed into counters/counter_rates/gauges:
 * the exact names <prefixStats>.bad_lines_seen, .packets_received,
 * .metrics_received (counters) and .timestamp_lag (gauge) are moved into
 * `statsd` as {bad_lines_seen, packets_received, metrics_received,
 * timestamp_lag, processing_time}, so `counters` only contains what clients
 * sent. (A client metric that happens to be called e.g. "statsd.foo" stays in
 * `counters`.)
 *
 * The line is written with appendFileSync, inside the flush event, before
 * statsd clears its counters: statsd's last flush on SIGTERM/exit (which runs
 * in process.on('exit'), where nothing asynchronous completes) is captured too.
 */
'use strict';

const fs = require('fs');

function CaptureBackend(startupTime, config, events, logger) {
  this.config = config;
  this.file = config.captureFile;
  this.prefix = config.prefixStats !== undefined ? config.prefixStats : 'statsd';
  this.seq = 0;
  this.lastFlush = startupTime;
  this.logger = logger;

  events.on('flush', (timestamp, metrics) => this.flush(timestamp, metrics));
  events.on('status', (write) => this.status(write));
}

CaptureBackend.prototype.flush = function (timestamp, metrics) {
  const prefix = this.prefix;
  const internalCounters = ['bad_lines_seen', 'packets_received', 'metrics_received'];
  const internal = {
    processing_time: metrics.statsd_metrics ? metrics.statsd_metrics.processing_time : null,
    timestamp_lag: null
  };
  const isInternal = {};
  internalCounters.forEach((name) => { isInternal[prefix + '.' + name] = name; });

  const counters = {};
  const counterRates = {};
  for (const key in metrics.counters) {
    if (key in isInternal) {
      internal[isInternal[key]] = metrics.counters[key];
    } else {
      counters[key] = metrics.counters[key];
      counterRates[key] = metrics.counter_rates[key];
    }
  }

  const gauges = {};
  for (const key in metrics.gauges) {
    if (key === prefix + '.timestamp_lag') {
      internal.timestamp_lag = metrics.gauges[key];
    } else {
      gauges[key] = metrics.gauges[key];
    }
  }

  const sets = {};
  for (const key in metrics.sets) {
    sets[key] = metrics.sets[key].values().sort();
  }

  this.seq += 1;
  this.lastFlush = timestamp;
  const record = {
    pid: process.pid,
    seq: this.seq,
    timestamp: timestamp,
    wall_ms: Date.now(),
    flushInterval: this.config.flushInterval,
    counters: counters,
    counter_rates: counterRates,
    gauges: gauges,
    sets: sets,
    timers: metrics.timers,
    timer_counters: metrics.timer_counters,
    timer_data: metrics.timer_data,
    pctThreshold: metrics.pctThreshold,
    statsd: internal
  };
  try {
    fs.appendFileSync(this.file, JSON.stringify(record) + '\n');
  } catch (err) {
    this.logger.log('capture backend: cannot write ' + this.file + ': ' + err, 'ERROR');
  }
};

CaptureBackend.prototype.status = function (write) {
  write(null, 'capture', 'flushes', this.seq);
  write(null, 'capture', 'lastFlush', this.lastFlush);
};

exports.init = function (startupTime, config, events, logger) {
  if (!config.captureFile) {
    logger.log('capture backend: config.captureFile is not set', 'ERROR');
    return false;
  }
  new CaptureBackend(startupTime, config, events, logger);
  return true;
};
