import CoreMetrics
import Foundation
import Prometheus
import Synchronization
import TernBrokerCore
import TernCodec
import TernStore

/// The broker's figures in Prometheus' text format, for the metrics listener's `/metrics`.
///
/// The publish path does no work for metrics: the counters are the ones `$SYS/broker/...` is
/// published from (``BrokerStatistics`` and the traffic counters), read when Prometheus scrapes and
/// handed to swift-prometheus as increments since the last scrape. Only store commits are
/// recorded as they happen, into the commit-latency histogram, a swift-metrics `Timer`.
final class BrokerMetrics: Sendable {
    /// Where every figure lives; an embedder may add its own (see ``MQTTBroker/metricsFactory``).
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    /// Only with a store: a broker without one commits nothing.
    private let commitDuration: CoreMetrics.Timer?
    /// Each counter with the value it was last brought to: a scrape adds the difference.
    private let counters = Mutex<[String: (counter: Prometheus.Counter, value: UInt64)]>([:])

    static let commitDurationName = "tern_store_commit_duration_seconds"

    init(withStore: Bool) {
        var factory = PrometheusMetricsFactory(registry: registry)
        // A commit is an fsync: tens of microseconds on a fast disk, tens of milliseconds on a slow one.
        factory.durationHistogramBuckets[Self.commitDurationName] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .seconds(1),
        ]
        self.factory = factory
        commitDuration = withStore ? CoreMetrics.Timer(label: Self.commitDurationName, factory: factory) : nil
    }

    /// A whole metric name with its help text (swift-prometheus splits names into parts; Tern's
    /// names are written whole).
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func recordCommit(_ duration: Duration) {
        commitDuration?.recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        )
    }

    /// Everything a scrape reports, read by the broker.
    struct Reading {
        var statistics: BrokerStatistics
        var gauges: BrokerGauges
        var store: StoreStatistics?
        var process: ProcessFigures?
        var startedAt: Date
    }

    /// The exposition text for `reading`.
    func exposition(_ reading: Reading) -> [UInt8] {
        let statistics = reading.statistics
        counters.withLock { counters in
            /// Brings counter `name` to `value`, counted in `units` per reported unit.
            func count(
                _ name: String,
                _ help: String,
                _ labels: [(String, String)] = [],
                _ value: UInt64,
                units: UInt64 = 1
            ) {
                let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
                let entry =
                    counters[key]
                    ?? (registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels), 0)
                if value > entry.value {
                    let increment = value - entry.value
                    if units == 1 {
                        entry.counter.increment(by: Int64(increment))
                    } else {
                        entry.counter.increment(by: Double(increment) / Double(units))
                    }
                }
                counters[key] = (entry.counter, max(value, entry.value))
            }
            for qos in [QoS.atMostOnce, .atLeastOnce, .exactlyOnce] {
                let label = [("qos", "\(qos.rawValue)")]
                count(
                    "tern_messages_received_total",
                    "PUBLISH packets received from clients.",
                    label,
                    statistics.publishReceivedByQoS[qos]
                )
                count(
                    "tern_messages_sent_total",
                    "PUBLISH packets sent to clients.",
                    label,
                    statistics.publishSentByQoS[qos]
                )
                count(
                    "tern_payload_received_bytes_total",
                    "Payload bytes of the PUBLISH packets received.",
                    label,
                    statistics.payloadBytesReceivedByQoS[qos]
                )
                count(
                    "tern_payload_sent_bytes_total",
                    "Payload bytes of the PUBLISH packets sent.",
                    label,
                    statistics.payloadBytesSentByQoS[qos]
                )
            }
            count(
                "tern_packets_received_total",
                "MQTT packets of every kind received.",
                [],
                statistics.messagesReceived
            )
            count("tern_packets_sent_total", "MQTT packets of every kind sent.", [], statistics.messagesSent)
            count("tern_received_bytes_total", "Bytes received on MQTT connections.", [], statistics.bytesReceived)
            count("tern_sent_bytes_total", "Bytes sent on MQTT connections.", [], statistics.bytesSent)
            count("tern_connections_total", "Connections accepted since start.", [], statistics.connectionsTotal)
            let dropped = "Messages not delivered to a client, by reason."
            let backpressure = statistics.publishMessagesDroppedBackpressure
            count(
                "tern_messages_dropped_total",
                dropped,
                [("reason", "queue_limit")],
                statistics.publishMessagesDropped - min(backpressure, statistics.publishMessagesDropped)
            )
            count("tern_messages_dropped_total", dropped, [("reason", "backpressure")], backpressure)
            count(
                "tern_messages_dropped_total",
                dropped,
                [("reason", "packet_too_large")],
                statistics.publishMessagesDroppedTooLarge
            )
            count(
                "tern_messages_expired_total",
                "Messages discarded because their Message Expiry Interval passed.",
                [],
                statistics.publishMessagesExpired
            )
            count(
                "tern_backpressure_events_total",
                "Times a connection stopped keeping up with what it was sent.",
                [],
                statistics.backpressureEvents
            )
            if let store = reading.store {
                count("tern_store_commits_total", "Store transactions committed.", [], store.commits)
                count(
                    "tern_store_changes_total",
                    "Store changes committed; divided by tern_store_commits_total, the mean batch.",
                    [],
                    store.committedChanges
                )
            }
            if let process = reading.process {
                // In microseconds, so that the whole-number bookkeeping keeps the precision.
                count(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    [],
                    UInt64(process.cpuSeconds * 1_000_000),
                    units: 1_000_000
                )
            }
        }

        func gauge(_ name: String, _ help: String, _ value: Double) {
            registry.makeGauge(descriptor: Self.descriptor(name, help), labels: []).set(to: value)
        }
        let gauges = reading.gauges
        gauge("tern_clients_connected", "Clients connected now.", Double(gauges.clientsConnected))
        gauge("tern_sessions", "Sessions held, connected or not.", Double(gauges.sessions))
        gauge("tern_subscriptions", "Subscriptions held.", Double(gauges.subscriptions))
        gauge("tern_retained_messages", "Retained messages held.", Double(gauges.retainedMessages))
        gauge("tern_messages_queued", "Messages waiting in session queues.", Double(gauges.queuedMessages))
        gauge(
            "tern_messages_inflight",
            "QoS 1/2 messages sent and not yet acknowledged.",
            Double(gauges.inflightMessages)
        )
        gauge(
            "tern_clients_backpressured",
            "Connected clients not keeping up with what they are sent.",
            Double(gauges.clientsBackpressured)
        )
        if let store = reading.store {
            gauge("tern_store_size_bytes", "Size of the store file.", Double(store.fileSize))
            gauge("tern_store_sessions", "Sessions in the store.", Double(store.sessions))
            gauge("tern_store_messages", "Messages in the store.", Double(store.messages))
        }
        if let process = reading.process {
            gauge("process_resident_memory_bytes", "Resident memory size in bytes.", Double(process.residentBytes))
            if let descriptors = process.openFileDescriptors {
                gauge("process_open_fds", "Number of open file descriptors.", Double(descriptors))
            }
        }
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            reading.startedAt.timeIntervalSince1970
        )
        return registry.emitToBuffer()
    }
}
