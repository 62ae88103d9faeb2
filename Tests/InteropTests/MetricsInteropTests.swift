import Foundation
import TernBroker
import TernBrokerTesting
import TernCodec
import TernStoreSQLite
import Testing

extension Peers {
    static let curl = which("curl")

    /// prometheus_client (PyPI) for Debian's interpreter, which runs the scripts.
    static let prometheusClientAvailable: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { return false }
        return (try? runBlocking("/usr/bin/python3", ["-c", "import prometheus_client"], timeout: 20).status) == 0
    }()

    /// `curl` against the metrics listener: the status line's code and the body.
    static func http(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        guard let curl else { throw PeerTimeout(what: "curl") }
        let output = try await runOffPool(
            curl,
            ["-s", "-m", "10", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]
        )
        var lines = output.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.popLast() ?? "") ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    /// Scrapes `/metrics` with curl and parses it with prometheus_client's parser.
    static func scrape(_ port: Int) async throws -> (samples: [String: Double], types: [String: String]) {
        let (status, body) = try await http(port, "/metrics")
        guard status == 200 else { throw ScrapeFailure(reason: "/metrics answered \(status)") }
        let parser = try await runOffPool(
            "/usr/bin/python3",
            [script("parse_metrics.py")],
            timeout: 30,
            input: Data(body.utf8)
        )
        guard parser.status == 0 else {
            throw ScrapeFailure(reason: "prometheus_client could not parse /metrics: \(parser.stderr)")
        }
        let json = Data(parser.stdout.utf8)
        struct Parsed: Decodable {
            var samples: [String: Double]
            var types: [String: String]
        }
        let parsed = try JSONDecoder().decode(Parsed.self, from: json)
        return (parsed.samples, parsed.types)
    }
}

struct ScrapeFailure: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

/// The metrics listener (`metrics_listener`) scraped by curl and read by prometheus_client's own
/// parser, while a load runs through the broker.
@Suite(
    "Metrics and health over HTTP",
    .enabled(if: Peers.curl != nil && Peers.prometheusClientAvailable, "needs curl and prometheus-client")
)
struct MetricsInteropTests {
    static let messages = 2_000

    @Test("/metrics during a QoS 1 load: the counters move by what was sent and delivered, in order and complete")
    func scrapeDuringLoad() async throws {
        let directory = try TemporaryDirectory(prefix: "metrics")
        let store = try SQLiteStore(path: directory.file("tern.db"))
        try await withTestBroker({ options in
            options.metricsListener = .init(host: "127.0.0.1", port: 0)
            options.store = store
            // No queue limit: with Mosquitto's default of 1,000, a subscriber that a busy machine
            // holds back by more than that loses messages by design (40 of 2,000 once in CI).
            options.broker.maxQueuedMessages = 0
        }) { broker, port in
            let metricsPort = try #require(try await broker.waitUntilMetricsListening().port)
            #expect(try await Peers.http(metricsPort, "/health").status == 200)
            #expect(try await Peers.http(metricsPort, "/ready").status == 200)
            #expect(try await Peers.http(metricsPort, "/nothing").status == 404)

            let before = try await Peers.scrape(metricsPort)
            let subscriber = try await SequencedLoad.subscribe(
                port: port,
                clientID: "metrics-sub",
                filter: "metrics/#",
                qos: .atLeastOnce,
                sessionExpiry: 600
            )
            let publication = SequencedLoad.Publication(
                clientID: "metrics-pub",
                publisher: 1,
                topic: "metrics/load",
                count: Self.messages,
                qos: { _ in .atLeastOnce }
            )
            // Scraped while the load runs too: the endpoint answers and parses under load.
            async let published: Int = SequencedLoad.publish(port: port, publication)
            let during = try await Peers.scrape(metricsPort)
            #expect(during.samples["tern_clients_connected{}"].map { $0 >= 1 } == true)
            _ = try await published
            do {
                try await subscriber.wait(timeout: .seconds(60)) { $0.count >= Self.messages }
            } catch {
                // What the broker had done by then, to tell a stalled queue from a lost message.
                let figures = broker.statistics
                Issue.record(
                    "subscriber has \(subscriber.deliveries.count) of \(Self.messages); broker received \(figures.publishMessagesReceived), sent \(figures.publishMessagesSent), dropped \(figures.publishMessagesDropped), backpressure events \(figures.backpressureEvents)"
                )
                throw error
            }
            let check = SequenceCheck(subscriber.deliveries, published: [1: Self.messages], qos: { _ in .atLeastOnce })
            #expect(check.outOfOrder == 0, "\(check)")
            #expect(check.lost == 0, "\(check)")
            #expect(broker.statistics.publishMessagesDropped == 0)

            let after = try await Peers.scrape(metricsPort)
            func delta(_ name: String) -> Double { (after.samples[name] ?? 0) - (before.samples[name] ?? 0) }
            #expect(delta("tern_messages_received_total{qos=1}") == Double(Self.messages))
            #expect(delta("tern_messages_sent_total{qos=1}") == Double(Self.messages))
            #expect(delta("tern_payload_received_bytes_total{qos=1}") == Double(Self.messages * 16))
            #expect(delta("tern_messages_received_total{qos=0}") == 0)
            #expect(delta("tern_connections_total{}") == 2)
            #expect(after.samples["tern_subscriptions{}"] == 1)
            #expect(after.samples["tern_sessions{}"] == 1)
            #expect(delta("tern_store_commits_total{}") > 0)
            // Each QoS 1 message is at least one change (its delivery and its message row).
            #expect(delta("tern_store_changes_total{}") >= delta("tern_store_commits_total{}"))
            #expect(delta("tern_store_commit_duration_seconds_count{}") > 0)
            #expect((after.samples["process_resident_memory_bytes{}"] ?? 0) > 1_000_000)
            #expect((after.samples["process_open_fds{}"] ?? 0) > 0)
            // Prometheus conventions: counters end in _total, histograms in _seconds.
            #expect(after.types["tern_messages_received"] == "counter")
            #expect(after.types["tern_store_commit_duration_seconds"] == "histogram")
            #expect(after.types["tern_clients_connected"] == "gauge")
            // $SYS reads the same counters.
            #expect(broker.statistics.publishMessagesReceived == UInt64(Self.messages))
            await subscriber.close()
        }
    }
}
