import Foundation
import TernBroker
import TernBrokerTesting
import Testing

/// Mosquitto's own clients against Tern, over MQTT 3.1.1 and 5.
@Suite(
    "Interop: mosquitto_pub / mosquitto_sub",
    .enabled(if: Peers.mosquittoAvailable, "mosquitto-clients is not installed")
)
struct MosquittoClientTests {
    let pub = Peers.which("mosquitto_pub") ?? ""
    let sub = Peers.which("mosquitto_sub") ?? ""

    @Test("QoS 0, 1 and 2 messages arrive, over 3.1.1 and 5", arguments: ["mqttv311", "mqttv5"])
    func qualitiesOfService(version: String) async throws {
        try await withTestBroker { broker, port in
            let subscriber = try Peers.Running(
                sub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "interop/#", "-q", "2", "-C", "3", "-v"]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            for qos in 0...2 {
                let result = try await Peers.run(
                    pub,
                    [
                        "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "interop/q\(qos)", "-m", "m\(qos)",
                        "-q", "\(qos)",
                    ]
                )
                #expect(result.status == 0, "\(result.stderr)")
            }
            let output = await subscriber.finish(timeout: 30)
            #expect(output.status == 0)
            // Three publishers, one message each: §4.6 orders messages per publisher and topic,
            // not across publishers, whose connections may be served by different event loops.
            #expect(
                output.stdout.split(separator: "\n").sorted() == ["interop/q0 m0", "interop/q1 m1", "interop/q2 m2"]
            )
        }
    }

    @Test("a retained message reaches a later subscriber, and an empty retained message clears it")
    func retained() async throws {
        try await withTestBroker { broker, port in
            try await Peers.run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "kept", "-m", "v1", "-r", "-q", "1"])
            let first = try await Peers.run(sub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "kept", "-C", "1", "-v"])
            #expect(first.stdout == "kept v1\n")
            try await Peers.run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "kept", "-n", "-r"])
            // No retained message may come first: the first message this subscriber sees is a live marker.
            // (mosquitto_sub -W relies on SIGALRM, which a child of the test runner may have blocked.)
            let later = try Peers.Running(sub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "kept", "-C", "1", "-v"])
            try await Peers.waitForSubscriptions(broker, count: 1)
            try await Peers.run(pub, ["-h", "127.0.0.1", "-p", "\(port)", "-t", "kept", "-m", "live"])
            #expect(await later.finish(timeout: 30).stdout == "kept live\n")
        }
    }

    @Test("a killed client's will reaches another subscriber", arguments: ["mqttv311", "mqttv5"])
    func will(version: String) async throws {
        try await withTestBroker { broker, port in
            let watcher = try Peers.Running(
                sub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "wills/#", "-C", "1", "-v"]
            )
            let doomed = try Peers.Running(
                sub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "nothing", "--will-topic", "wills/doomed",
                    "--will-payload", "gone", "--will-qos", "1",
                ]
            )
            try await Peers.waitForSubscriptions(broker, count: 2)
            doomed.killNow()
            _ = await doomed.finish(timeout: 5)
            let output = await watcher.finish(timeout: 30)
            #expect(output.stdout == "wills/doomed gone\n")
        }
    }

    @Test("a shared subscription splits messages between its members")
    func sharedSubscription() async throws {
        try await withTestBroker { broker, port in
            let members = try (0..<2).map { _ in
                try Peers.Running(
                    sub,
                    [
                        "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "$share/workers/jobs", "-q", "1",
                        "-C", "5",
                    ]
                )
            }
            try await Peers.waitForSubscriptions(broker, count: 2)
            for n in 0..<10 {
                try await Peers.run(
                    pub,
                    ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "jobs", "-m", "job\(n)", "-q", "1"]
                )
            }
            var outputs: [Peers.Output] = []
            for member in members { outputs.append(await member.finish(timeout: 30)) }
            let received = outputs.flatMap { $0.stdout.split(separator: "\n").map(String.init) }
            #expect(outputs.map { $0.stdout.split(separator: "\n").count } == [5, 5])
            #expect(Set(received) == Set((0..<10).map { "job\($0)" }))
        }
    }

    @Test("MQTT 5 properties pass through: user properties, content type, message expiry")
    func properties() async throws {
        try await withTestBroker { broker, port in
            let subscriber = try Peers.Running(
                sub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "p", "-C", "1", "-F", "%t %p %C %E %P"]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            try await Peers.run(
                pub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "p", "-m", "body",
                    "-D", "publish", "user-property", "site", "plant-7",
                    "-D", "publish", "content-type", "text/plain",
                    "-D", "publish", "message-expiry-interval", "300",
                ]
            )
            let output = await subscriber.finish(timeout: 30)
            #expect(output.stdout.hasPrefix("p body text/plain "))
            #expect(output.stdout.contains("site:plant-7"))
        }
    }
}
