import Foundation
import TernBroker
import TernBrokerTesting
import TernClient
import Testing

/// The `tern` executable that `swift test` builds next to the test bundle.
let ternExecutable: String? = {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let path = directory.appendingPathComponent("tern").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}()

/// `tern pub` and `tern sub` against Mosquitto's tools, in both directions, over 3.1.1 and 5.
@Suite(
    "Interop: tern pub / tern sub with mosquitto_pub / mosquitto_sub",
    .enabled(
        if: Peers.mosquittoAvailable && ternExecutable != nil,
        "mosquitto-clients or the tern executable is missing"
    )
)
struct CLIInteropTests {
    let tern = ternExecutable ?? ""
    let pub = Peers.which("mosquitto_pub") ?? ""
    let sub = Peers.which("mosquitto_sub") ?? ""

    @Test("tern sub receives what mosquitto_pub sends", arguments: ["mqttv311", "mqttv5"])
    func ternSubscribes(version: String) async throws {
        try await withTestBroker { broker, port in
            let subscriber = try Peers.Running(
                tern,
                ["sub", "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "cli/#", "-q", "2", "-C", "2", "-v"]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "cli/one", "-m", "1", "-q", "1"]
            )
            try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "cli/two", "-m", "2", "-q", "2"]
            )
            let output = await subscriber.finish(timeout: 30)
            #expect(output.status == 0, "\(output.stderr)")
            #expect(output.stdout == "cli/one 1\ncli/two 2\n")
        }
    }

    @Test("mosquitto_sub receives what tern pub sends", arguments: ["mqttv311", "mqttv5"])
    func ternPublishes(version: String) async throws {
        try await withTestBroker { broker, port in
            let subscriber = try Peers.Running(
                sub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "cli/#", "-q", "2", "-C", "3", "-v"]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            for qos in 0...2 {
                let result = try await Peers.run(
                    tern,
                    [
                        "pub", "-h", "127.0.0.1", "-p", "\(port)", "-V", version, "-t", "cli/q\(qos)", "-m", "m\(qos)",
                        "-q", "\(qos)",
                    ]
                )
                #expect(result.status == 0, "\(result.stderr)")
            }
            let output = await subscriber.finish(timeout: 30)
            #expect(output.stdout == "cli/q0 m0\ncli/q1 m1\ncli/q2 m2\n")
        }
    }

    @Test("MQTT 5 properties set with -D reach mosquitto_sub; -F prints them")
    func properties() async throws {
        try await withTestBroker { broker, port in
            let subscriber = try Peers.Running(
                sub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "p", "-C", "1", "-F", "%t %p %C %P"]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            try await Peers.run(
                tern,
                [
                    "pub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "p", "-m", "body",
                    "-D", "publish", "content-type", "text/plain", "-D", "publish", "user-property", "site", "plant-7",
                ]
            )
            #expect(await subscriber.finish(timeout: 30).stdout == "p body text/plain site:plant-7\n")
            // mosquitto_sub's subscription must be gone first, or the wait below could count it
            // and the publish could precede tern sub's SUBSCRIBE.
            try await Peers.waitForSubscriptions(broker, count: 0, exactly: true)

            let ternSubscriber = try Peers.Running(
                tern,
                [
                    "sub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "q", "-C", "1", "-F",
                    "%t|%p|%C|%E|%P",
                ]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            try await Peers.run(
                pub,
                [
                    "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "q", "-m", "x",
                    "-D", "publish", "content-type", "a/b", "-D", "publish", "message-expiry-interval", "300",
                    "-D", "publish", "user-property", "k", "v",
                ]
            )
            // %E is the expiry left when it arrived (§3.3.2.3.3): 300, or 299 if the delivery
            // took a second on a busy machine.
            let printed = await ternSubscriber.finish(timeout: 30).stdout
            #expect(["q|x|a/b|300|k:v\n", "q|x|a/b|299|k:v\n"].contains(printed), "\(printed)")
        }
    }

    @Test("exit codes: 27 when -W runs out, 1 when the connection is refused")
    func exitCodes() async throws {
        try await withTestBroker({ $0.broker.allowAnonymous = false }) { _, port in
            let refused = try await Peers.run(tern, ["pub", "-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x"])
            #expect(refused.status == 1)
        }
        try await withTestBroker { _, port in
            let timedOut = try await Peers.run(
                tern,
                ["sub", "-h", "127.0.0.1", "-p", "\(port)", "-t", "silence", "-W", "1"],
                timeout: 30
            )
            #expect(timedOut.status == 27)
        }
    }

    @Test("-c with -x keeps a session for tern sub; messages sent while it is away arrive")
    func persistentSubscriber() async throws {
        try await withTestBroker { broker, port in
            let first = try await Peers.run(
                tern,
                [
                    "sub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-i", "cli-durable", "-c", "-x", "300",
                    "-t", "away", "-q", "1", "-E",
                ]
            )
            #expect(first.status == 0, "\(first.stderr)")
            try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "away", "-m", "while-away", "-q", "1"]
            )
            let second = try await Peers.run(
                tern,
                [
                    "sub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-i", "cli-durable", "-c", "-x", "300",
                    "-t", "away", "-q", "1", "-C", "1",
                ],
                timeout: 30
            )
            #expect(second.stdout == "while-away\n")
        }
    }
}

/// The client durability check: `tern pub --store` killed with SIGKILL in the middle of a burst,
/// then started again with the same store. Every message it had started publishing must arrive:
/// at least once at QoS 1, exactly once at QoS 2.
@Suite("Client durability across SIGKILL", .enabled(if: ternExecutable != nil, "the tern executable is missing"))
struct ClientDurabilityTests {
    @Test("no QoS 1/2 message that tern pub started is lost to a kill", arguments: [1, 2])
    func killMidBurst(qos: Int) async throws {
        let tern = ternExecutable ?? ""
        try await withTestBroker { broker, port in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "tern-burst-\(UUID().uuidString)"
            ).path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let clientID = "burst-\(qos)"
            let subscriber = try Peers.Running(
                tern,
                [
                    "sub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-t", "burst/#", "-q", "\(qos)", "-W",
                    "60",
                ]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)

            let publisherArguments = [
                "pub", "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-i", clientID, "-c", "-x", "300", "--store",
                directory, "-q", "\(qos)", "-t", "burst/t",
            ]
            let input = Pipe()
            let publisher = Process()
            publisher.executableURL = URL(fileURLWithPath: tern)
            publisher.arguments = publisherArguments + ["-l"]
            publisher.standardInput = input
            publisher.standardOutput = FileHandle.nullDevice
            publisher.standardError = FileHandle.nullDevice
            try publisher.run()
            let total = 2000
            input.fileHandleForWriting.write(Data((0..<total).map { "m\($0)\n" }.joined().utf8))
            // Kill it (by its own PID) once part of the burst has gone through the broker.
            let deadline = Date().addingTimeInterval(20)
            while broker.statistics.publishMessagesReceived < 200, publisher.isRunning, Date() < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            kill(publisher.processIdentifier, SIGKILL)
            publisher.waitUntilExit()
            try? input.fileHandleForWriting.close()

            // What the killed process had started and not finished is in its store.
            let stored = try FileClientStore(directory: directory).load(clientID: clientID)
            let started = (stored?.outbound ?? []).compactMap { flow -> String? in
                if case .publish(let publish) = flow { String(buffer: publish.payload) } else { nil }
            }

            // Started again with the same store: it resumes the session and finishes those.
            let restart = try await Peers.run(tern, publisherArguments + ["-m", "done"], timeout: 30)
            #expect(restart.status == 0, "\(restart.stderr)")

            let received = await subscriber.finish(timeout: 3).stdout.split(separator: "\n").map(String.init)
            #expect(received.contains("done"))
            let burst = received.filter { $0 != "done" }
            let receivedSet = Set(burst)
            // Every message the killed process had started but not finished arrived after the restart.
            #expect(
                Set(started).isSubset(of: receivedSet),
                "missing: \(Set(started).subtracting(receivedSet).sorted())"
            )
            // And the burst arrived in order up to its last message, with no gap.
            let numbers = receivedSet.compactMap { Int($0.dropFirst()) }.sorted()
            if let highest = numbers.last { #expect(numbers == Array(0...highest), "a gap before m\(highest)") }
            if qos == 2 { #expect(burst.count == receivedSet.count, "duplicates at QoS 2") }
        }
    }
}

/// Password files shared with Mosquitto, both ways.
@Suite(
    "Interop: password files",
    .enabled(
        if: Peers.mosquittoAvailable && ternExecutable != nil && Peers.which("mosquitto_passwd") != nil,
        "mosquitto or tern is missing"
    )
)
struct PasswordFileInteropTests {
    let tern = ternExecutable ?? ""

    @Test("a file made by mosquitto_passwd lets its user into Tern, and keeps others out")
    func mosquittoFileInTern() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-pw-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let made = try await Peers.run(Peers.which("mosquitto_passwd")!, ["-c", "-b", path, "dave", "correct horse"])
        #expect(made.status == 0, "\(made.stderr)")
        let file = try PasswordFile.load(path: path)
        try await withTestBroker({
            $0.passwordFile = file; $0.broker.allowAnonymous = false
        }) { _, port in
            let pub = Peers.which("mosquitto_pub")!
            let accepted = try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-u", "dave", "-P", "correct horse"]
            )
            #expect(accepted.status == 0, "\(accepted.stderr)")
            let refused = try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-u", "dave", "-P", "wrong"]
            )
            #expect(refused.status != 0)
        }
    }

    @Test("a file made by tern passwd lets its user into Mosquitto")
    func ternFileInMosquitto() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-pw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("passwd").path
        let made = try await Peers.run(tern, ["passwd", "-c", "-b", path, "erin", "s3cret"])
        #expect(made.status == 0, "\(made.stderr)")
        // Mosquitto drops to its own user unless told otherwise, and could not read a 0600 file then.
        let config = directory.appendingPathComponent("mosquitto.conf").path
        let (broker, port) = try await Peers.startOnFreePort { port in
            try "user root\nlistener \(port) 127.0.0.1\npassword_file \(path)\n".write(
                toFile: config,
                atomically: true,
                encoding: .utf8
            )
            return (Peers.which("mosquitto") ?? "/usr/sbin/mosquitto", ["-c", config])
        }
        defer { broker.killNow() }
        let pub = Peers.which("mosquitto_pub")!
        var accepted = Peers.Output(status: -1, stdout: "", stderr: "")
        for _ in 0..<100 {  // until mosquitto listens, at most ~5 s
            accepted = try await Peers.run(
                pub,
                ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-u", "erin", "-P", "s3cret"]
            )
            if accepted.status == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(accepted.status == 0, "\(accepted.stderr)")
        let refused = try await Peers.run(
            pub,
            ["-h", "127.0.0.1", "-p", "\(port)", "-t", "t", "-m", "x", "-u", "erin", "-P", "wrong"]
        )
        #expect(refused.status != 0)
    }

    /// Runs `tern bench` and returns its JSON line, parsed.
    func bench(port: Int, _ arguments: [String], json: String) async throws -> [String: Any] {
        let output = try await Peers.run(tern, ["bench", "-p", "\(port)", "--json", json] + arguments, timeout: 60)
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout.contains("rate="), "\(output.stdout)")
        let lines = try String(contentsOfFile: json, encoding: .utf8).split(separator: "\n")
        let line = try #require(lines.last.map { Data($0.utf8) })
        return try #require(try JSONSerialization.jsonObject(with: line) as? [String: Any])
    }

    @Test("tern bench numbers every payload: loss and order per publisher against Tern and Mosquitto (MQTT-4.6.0-6)")
    func benchChecksOrderAndLoss() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let json = directory.appendingPathComponent("bench.jsonl").path
        let runs: [[String]] = [
            ["-q", "1", "-P", "2", "-S", "2", "--layout", "pairs", "-c", "3000"],
            ["-q", "2", "-V", "3.1.1", "-P", "3", "-S", "1", "--layout", "fanin", "-c", "1000"],
            ["-q", "1", "-P", "1", "-S", "3", "--layout", "fanout", "-c", "1000", "--rate", "2000"],
        ]
        // Unlimited queues: with the test process's other suites competing for the CPU, a starved
        // subscriber must not lose QoS 1 messages to max_queued_messages (1000 by default).
        try await withTestBroker({ $0.broker.maxQueuedMessages = 0 }) { _, port in
            for arguments in runs {
                let result = try await bench(port: port, arguments + ["--label", "tern"], json: json)
                #expect(result["lost"] as? Int == 0, "\(arguments): \(result)")
                #expect(result["dup_or_ooo"] as? Int == 0, "\(arguments): \(result)")
                #expect(result["received"] as? Int == result["expected"] as? Int, "\(arguments): \(result)")
                #expect((result["expected"] as? Int ?? 0) >= 3000, "\(arguments): \(result)")
            }
        }
        let config = directory.appendingPathComponent("mosquitto.conf").path
        let (mosquitto, port) = try await Peers.startOnFreePort { port in
            try "listener \(port) 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n".write(
                toFile: config,
                atomically: true,
                encoding: .utf8
            )
            return (Peers.which("mosquitto") ?? "/usr/sbin/mosquitto", ["-c", config])
        }
        defer { mosquitto.killNow() }
        let pid = mosquitto.process.processIdentifier
        let result = try await bench(port: port, runs[0] + ["--label", "mosquitto", "-b", "\(pid)"], json: json)
        #expect(result["lost"] as? Int == 0 && result["dup_or_ooo"] as? Int == 0, "\(result)")
        #expect(result["broker"] as? String == "mosquitto")
        // With --broker-pid the broker's own figures are read from /proc.
        #expect((result["rss_peak_kb"] as? Int ?? 0) > 0, "\(result)")
        #expect(result["broker_cpu_pct"] is Double, "\(result)")
    }
}

/// Resident memory of `tern serve` in a process of its own, across connect/disconnect cycles.
@Suite("Broker memory", .enabled(if: ternExecutable != nil, "the tern executable is missing"))
struct BrokerMemoryTests {
    static func residentBytes(of pid: Int32) -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test("2 × 2,500 connect/disconnect cycles: the second round adds no memory to tern serve")
    func noGrowth() async throws {
        let (server, port) = try await Peers.startOnFreePort { port in
            (ternExecutable ?? "", ["serve", "-p", "\(port)"])
        }
        defer { server.killNow() }
        let pid = server.process.processIdentifier
        func round(_ label: Int) async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for cycle in 0..<312 {
                            var configuration = MQTTClientConfiguration(
                                port: port,
                                clientID: "mem-\(label)-\(worker)-\(cycle)"
                            )
                            configuration.reconnect = nil
                            configuration.keepAlive = 0
                            let client = MQTTClient(configuration: configuration)
                            try await client.connect()
                            await client.disconnect()
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        // Wait (bounded) until the broker listens.
        var ready = false
        for _ in 0..<200 where !ready {
            var probe = MQTTClientConfiguration(port: port, clientID: "probe")
            probe.reconnect = nil
            if (try? await MQTTClient(configuration: probe).connect()) != nil {
                ready = true
            } else {
                try await Task.sleep(for: .milliseconds(25))
            }
        }
        #expect(ready)
        try await round(0)  // warm-up: allocator arenas, NIO buffers
        let start = Self.residentBytes(of: pid)
        try await round(1)
        let afterFirst = Self.residentBytes(of: pid)
        try await round(2)
        let afterSecond = Self.residentBytes(of: pid)
        // A leak of 1 KiB per connection would add 2.5 MB per round.
        #expect(
            afterSecond - afterFirst < 2_000_000,
            "tern serve grew \(afterFirst - start) then \(afterSecond - afterFirst) bytes"
        )
    }
}
