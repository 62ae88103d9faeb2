import Foundation
import Histogram
import TernBroker

/// What one subscriber received from one publisher, checked against the sequence numbers the
/// publisher put in its payloads: how many distinct messages arrived, and how many arrived again
/// or after a later one (MQTT-4.6.0-6 forbids the latter within a QoS 1/2 flow).
struct SequenceCheck {
    private var seen: [UInt64] = []
    private(set) var highest: Int64 = -1
    private(set) var distinct = 0
    private(set) var duplicateOrOutOfOrder = 0

    mutating func record(_ sequence: UInt32) {
        let word = Int(sequence >> 6)
        let bit = UInt64(1) << UInt64(sequence & 63)
        if word >= seen.count {
            seen.append(contentsOf: repeatElement(0, count: word - seen.count + 1 + seen.count / 2))
        }
        if Int64(sequence) < highest || seen[word] & bit != 0 { duplicateOrOutOfOrder += 1 }
        if seen[word] & bit == 0 {
            seen[word] |= bit
            distinct += 1
        }
        highest = max(highest, Int64(sequence))
    }
}

extension ProcessFigures {
    /// Resident set size in KiB, as the report prints it.
    var residentKiB: Int { residentBytes / 1024 }

    /// This process's own CPU time, from `getrusage`.
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// The outcome of one `tern bench` run, as printed and as a JSON line.
struct BenchReport: Sendable {
    var label: String
    var protocolName: String
    var layout: String
    var qos: Int
    var payload: Int
    var publishers: Int
    var subscribers: Int
    var rateTarget: Int
    var sent: Int
    var sendSeconds: Double
    var acknowledged: Int
    var expected: Int
    var received: Int
    var receiveSeconds: Double
    var lost: Int
    var duplicateOrOutOfOrder: Int
    var latency: Histogram<UInt64>
    var generatorCPU: Double
    var brokerCPU: Double?
    var brokerRSS: (start: Int, end: Int, peak: Int)?

    var receiveRate: Double { receiveSeconds > 0 ? Double(received) / receiveSeconds : 0 }

    /// Human-readable lines. The first is the one scripts read (`rate=`).
    var lines: [String] {
        func f(_ value: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", value) }
        let percentiles = [50.0, 90, 99, 99.9].map { f(Double(latency.valueAtPercentile($0)) / 1000, 1) }
        var result = [
            "\(label): qos=\(qos) messages=\(received) payload=\(payload)B seconds=\(f(receiveSeconds, 3)) rate=\(Int(receiveRate)) msg/s",
            "  \(protocolName) layout=\(layout) publishers=\(publishers) subscribers=\(subscribers)"
                + (rateTarget > 0 ? " target=\(rateTarget) msg/s" : ""),
            "  sent \(sent) in \(f(sendSeconds, 3)) s = \(Int(sendSeconds > 0 ? Double(sent) / sendSeconds : 0)) msg/s"
                + (qos > 0 ? "; acknowledged \(acknowledged)" : ""),
            "  received \(received) of \(expected) expected; lost \(lost), duplicate or out of order \(duplicateOrOutOfOrder)",
            "  latency us: p50 \(percentiles[0]) p90 \(percentiles[1]) p99 \(percentiles[2]) p99.9 \(percentiles[3])"
                + " max \(f(Double(latency.max) / 1000, 1)) (n=\(latency.totalCount))"
                + (rateTarget == 0 ? "  [no fixed rate: queueing delay, not latency]" : ""),
        ]
        var cpu = "  cpu: generator \(f(generatorCPU * 100))%"
        if let brokerCPU { cpu += ", broker \(f(brokerCPU * 100))% (of one core)" }
        if let rss = brokerRSS { cpu += "; broker RSS \(rss.start) -> \(rss.end) kB (peak \(rss.peak))" }
        if let brokerCPU, received > 0 {
            cpu += "; broker CPU per delivery \(f(brokerCPU * receiveSeconds / Double(received) * 1e6, 2)) us"
        }
        result.append(cpu)
        if generatorCPU > 0.9 { result.append("  note: the generator used most of a core; it may be the bottleneck") }
        return result
    }

    /// One JSON object on one line, with the same field names as the C generator's where they mean the same.
    var json: String {
        var fields: [(String, String)] = [
            ("tool", "\"tern-bench\""), ("broker", "\"\(label)\""), ("proto", "\"\(protocolName)\""),
            ("layout", "\"\(layout)\""), ("qos", "\(qos)"), ("payload", "\(payload)"), ("pubs", "\(publishers)"),
            ("subs", "\(subscribers)"), ("rate_target", "\(rateTarget)"), ("sent", "\(sent)"),
            ("acked", "\(acknowledged)"), ("expected", "\(expected)"), ("received", "\(received)"),
            ("recv_rate", String(format: "%.1f", receiveRate)), ("lost", "\(lost)"),
            ("dup_or_ooo", "\(duplicateOrOutOfOrder)"),
        ]
        for (name, percentile) in [("p50", 50.0), ("p90", 90), ("p99", 99), ("p999", 99.9)] {
            fields.append(
                ("lat_\(name)_us", String(format: "%.1f", Double(latency.valueAtPercentile(percentile)) / 1000))
            )
        }
        fields.append(("lat_max_us", String(format: "%.1f", Double(latency.max) / 1000)))
        fields.append(("generator_cpu_pct", String(format: "%.1f", generatorCPU * 100)))
        if let brokerCPU { fields.append(("broker_cpu_pct", String(format: "%.1f", brokerCPU * 100))) }
        if let rss = brokerRSS {
            fields += [("rss_start_kb", "\(rss.start)"), ("rss_end_kb", "\(rss.end)"), ("rss_peak_kb", "\(rss.peak)")]
        }
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}
