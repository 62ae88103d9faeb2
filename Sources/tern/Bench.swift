import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import TernBroker
import TernCodec

/// `tern bench`: publishers and subscribers through any MQTT broker, to compare brokers side by
/// side on the same machine. It prints figures; it asserts nothing.
///
/// Every payload carries its publisher's number, a sequence number and the send time, so each
/// run reports loss and order per publisher and subscriber, and latency percentiles. With
/// `--broker-pid` it reads the broker's CPU time and memory from `/proc`, and it always reports
/// its own CPU, so that a run where the generator is the bottleneck says so. It runs on one
/// thread, to leave the other cores to the broker.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure an MQTT broker: throughput, latency, order and loss, and its CPU and memory.",
        discussion: """
            Without --rate the publishers go as fast as --window and --inflight allow, and the
            latency printed is queueing delay; give a fixed --rate for latency figures.
            """
    )

    @Option(name: .shortAndLong, help: "Broker host.") var host = "127.0.0.1"
    @Option(name: .shortAndLong, help: "Broker port.") var port = 1883
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Connect the subscribers to this port instead of --port: another node of a Tern cluster.",
            discussion:
                "The run then starts a second after the subscriptions are acknowledged, the time the other nodes take to read them."
        )
    )
    var subscriberPort: Int?
    @Option(name: .shortAndLong, help: "QoS of the messages (0, 1 or 2).") var qos = 0
    @Option(name: .shortAndLong, help: "Messages per publisher (unless --duration is given).") var count = 200_000
    @Option(name: .shortAndLong, help: "Publish for this many seconds instead of a count.") var duration: Double?
    @Option(help: "Payload size in bytes, at least 16.") var payload = 16
    @Option(name: [.customShort("P"), .long], help: "Publishers.") var publishers = 1
    @Option(name: [.customShort("S"), .long], help: "Subscribers.") var subscribers = 1
    @Option(help: "pairs (publisher i to subscriber i), fanin (all to each subscriber) or fanout (one topic).")
    var layout: String = "pairs"
    @Option(name: .shortAndLong, help: "Messages per second over all publishers; 0 is as fast as allowed.")
    var rate = 0
    @Option(help: "Deliveries on their way at most (default 1000 per subscriber; 0 for no limit).") var window: Int?
    @Option(help: "Unacknowledged QoS 1/2 publishes per publisher (default: the broker's Receive Maximum, 3.1.1: 20).")
    var inflight: Int?
    @Option(name: [.customShort("V"), .long], help: "MQTT version: 5 or 3.1.1.") var protocolVersion = "5"
    @Flag(help: "Subscribers keep persistent sessions (clean start 0, session expiry 3600), so a store holds theirs.")
    var persistent = false
    @Option(name: [.customShort("b"), .long], help: "The broker's process id: report its CPU and memory.")
    var brokerPid: Int32?
    @Option(help: "Append the figures as one JSON line to this file.") var json: String?
    @Option(help: "A label for the output.") var label = "broker"
    @Option(help: "Give up after this many seconds.") var timeout: Int64 = 300
    @Option(help: "Stop waiting for deliveries after this many seconds without one.") var drainTimeout: Int64 = 5
    @Option(help: "Connect over TLS, trusting the broker certificate if it chains to these PEM certificates.")
    var cafile: String?

    func validate() throws {
        guard QoS(rawValue: UInt8(clamping: qos)) != nil else { throw ValidationError("--qos must be 0, 1 or 2") }
        guard let layout = BenchLayout(rawValue: layout) else {
            throw ValidationError("--layout must be pairs, fanin or fanout")
        }
        guard payload >= BenchRun.headerSize else { throw ValidationError("--payload must be at least 16 bytes") }
        guard publishers > 0, subscribers > 0 else {
            throw ValidationError("--publishers and --subscribers must be > 0")
        }
        if layout == .pairs, publishers != subscribers {
            throw ValidationError("--layout pairs needs as many publishers as subscribers")
        }
        guard ["5", "3.1.1"].contains(protocolVersion) else { throw ValidationError("--protocol-version: 5 or 3.1.1") }
    }

    func run() async throws {
        var tls: NIOSSLContext?
        if let cafile {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cafile))
            tls = try NIOSSLContext(configuration: configuration)
        }
        let plan = BenchPlan(
            layout: BenchLayout(rawValue: layout)!,
            qos: QoS(rawValue: UInt8(qos))!,
            version: protocolVersion == "5" ? .v5 : .v3_1_1,
            publishers: publishers,
            subscribers: subscribers,
            payload: payload,
            count: duration == nil ? count : 0,
            duration: .nanoseconds(Int64((duration ?? 0) * 1e9)),
            rate: rate,
            window: window ?? 1000 * subscribers,
            inflight: inflight ?? 0,
            topicPrefix: "tern-bench/\(UInt32.random(in: 0...UInt32.max))"
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let report = try await measure(plan: plan, loop: group.next(), tls: tls)
            for line in report.lines { print(line) }
            if let json {
                if !FileManager.default.fileExists(atPath: json) {
                    _ = FileManager.default.createFile(atPath: json, contents: nil)
                }
                let handle = FileHandle(forWritingAtPath: json)
                handle?.seekToEndOfFile()
                handle?.write(Data((report.json + "\n").utf8))
                try? handle?.close()
            }
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    private func measure(plan: BenchPlan, loop: any EventLoop, tls: NIOSSLContext?) async throws -> BenchReport {
        let run = try await loop.submit { NIOLoopBound(BenchRun(plan: plan, loop: loop), eventLoop: loop) }.get()
        let tag = UInt16.random(in: 0...9999)
        var channels: [any Channel] = []
        defer { for channel in channels { channel.close(promise: nil) } }
        for subscriber in 0..<plan.subscribers {
            let channel = try await open(
                run,
                role: .subscriber(subscriber),
                clientID: "bench-\(tag)-sub-\(subscriber)",
                topic: plan.filter(subscriber: subscriber),
                persistent: persistent,
                tls: tls
            )
            channels.append(channel)
            try await handshake(channel, run: run) { connection in
                try connection.send(
                    .subscribe(
                        Subscribe(
                            packetIdentifier: 1,
                            subscriptions: [
                                .init(
                                    filter: try TopicFilter(plan.filter(subscriber: subscriber)),
                                    options: .init(qos: plan.qos)
                                )
                            ]
                        )
                    )
                )
            }
        }
        if subscriberPort != nil {
            // Nodes learn another node's subscriptions from the database, a moment after SUBACK.
            try await Task.sleep(for: .seconds(1))
        }
        for publisher in 0..<plan.publishers {
            let channel = try await open(
                run,
                role: .publisher(publisher),
                clientID: "bench-\(tag)-pub-\(publisher)",
                topic: plan.topic(publisher: publisher),
                persistent: false,
                tls: tls
            )
            channels.append(channel)
        }

        let brokerStart = brokerPid.flatMap { ProcessFigures.read(pid: $0) }
        let ownStart = ProcessFigures.ownCPUSeconds()
        let peakRSS = brokerStart?.residentKiB ?? 0
        let wallStart = NIODeadline.now()
        let drainTimeout = TimeAmount.seconds(self.drainTimeout)
        let showProgress = isatty(STDERR_FILENO) == 1
        let monitor = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            run.value.checkProgress(drainTimeout: drainTimeout)
            if showProgress {
                let elapsed = Double((NIODeadline.now() - run.value.started).nanoseconds) / 1e9
                let line = String(
                    format: "\r  %.0f s: sent %d, received %d (%.0f msg/s)   ",
                    elapsed,
                    run.value.totalSent,
                    run.value.received,
                    Double(run.value.received) / max(elapsed, 0.001)
                )
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        let sampler = Task { [brokerPid, startRSS = peakRSS] in
            var peak = startRSS
            while !Task.isCancelled, let pid = brokerPid {
                if let sample = ProcessFigures.read(pid: pid) { peak = max(peak, sample.residentKiB) }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return peak
        }
        let limit = loop.scheduleTask(in: .seconds(timeout)) { run.value.finish() }
        let finished = try await loop.submit {
            run.value.start()
            return run.value.finished.futureResult
        }.get()
        try await finished.get()
        limit.cancel()
        monitor.cancel()
        sampler.cancel()
        let peak = await sampler.value
        if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        let wall = Double((NIODeadline.now() - wallStart).nanoseconds) / 1e9
        let brokerEnd = brokerPid.flatMap { ProcessFigures.read(pid: $0) }
        let ownCPU = ProcessFigures.ownCPUSeconds() - ownStart

        return try await loop.submit {
            let state = run.value
            let (lost, disorder) = state.lossAndDisorder()
            let ended = state.publishingEnded ?? .now()
            var brokerRSS: (Int, Int, Int)?
            var brokerCPU: Double?
            if let brokerStart, let brokerEnd {
                brokerRSS = (brokerStart.residentKiB, brokerEnd.residentKiB, max(peak, brokerEnd.residentKiB))
                brokerCPU = (brokerEnd.cpuSeconds - brokerStart.cpuSeconds) / wall
            }
            return BenchReport(
                label: label,
                protocolName: plan.version == .v5 ? "v5" : "v3.1.1",
                layout: plan.layout.rawValue,
                qos: Int(plan.qos.rawValue),
                payload: plan.payload,
                publishers: plan.publishers,
                subscribers: plan.subscribers,
                rateTarget: plan.rate,
                sent: state.totalSent,
                sendSeconds: Double((ended - state.started).nanoseconds) / 1e9,
                acknowledged: state.acknowledged.reduce(0, +),
                expected: state.expectedDeliveries,
                received: state.received,
                receiveSeconds: Double((state.lastReceived - state.started).nanoseconds) / 1e9,
                lost: lost,
                duplicateOrOutOfOrder: disorder,
                latency: state.latency,
                generatorCPU: ownCPU / wall,
                brokerCPU: brokerCPU,
                brokerRSS: brokerRSS
            )
        }.get()
    }

    /// Connects one client and waits for its CONNACK.
    private func open(
        _ run: NIOLoopBound<BenchRun>,
        role: BenchConnection.Role,
        clientID: String,
        topic: String,
        persistent: Bool,
        tls: NIOSSLContext?
    ) async throws -> any Channel {
        let loop = run.eventLoop
        let channel = try await ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: "localhost")
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        BenchConnection(role: role, run: run.value, topic: topic)
                    )
                }
            }
            .connect(host: host, port: role.isSubscriber ? (subscriberPort ?? port) : port).get()
        let version = protocolVersion == "5" ? ProtocolVersion.v5 : .v3_1_1
        let receiveMaximum = try await handshake(channel, run: run) { connection in
            var properties = Properties()
            if version == .v5, persistent { properties.sessionExpiryInterval = 3600 }
            try connection.send(
                .connect(
                    Connect(
                        protocolVersion: version,
                        clientIdentifier: clientID,
                        cleanStart: !persistent,
                        keepAlive: 600,
                        properties: properties
                    )
                )
            )
        }
        if case .publisher(let publisher) = role {
            let requested = inflight ?? 0
            let limit = requested > 0 ? requested : (version == .v5 ? Int(receiveMaximum) : 20)
            try await loop.submit {
                run.value.inflightLimit[publisher] = limit
                run.value.publisherChannels[publisher] = try channel.pipeline.syncOperations.handler(
                    type: BenchConnection.self
                )
            }.get()
        }
        return channel
    }

    /// Sends a handshake packet and waits for its answer (CONNACK or SUBACK), at most 30 s.
    @discardableResult
    private func handshake(
        _ channel: any Channel,
        run: NIOLoopBound<BenchRun>,
        send: @escaping @Sendable (BenchConnection) throws -> Void
    ) async throws -> UInt16 {
        let loop = run.eventLoop
        let answer = try await loop.submit {
            let connection = try channel.pipeline.syncOperations.handler(type: BenchConnection.self)
            let promise = loop.makePromise(of: UInt16.self)
            connection.handshake = promise
            try send(connection)
            let bound = NIOLoopBound(connection, eventLoop: loop)
            let timer = loop.scheduleTask(in: .seconds(30)) {
                guard let waiting = bound.value.handshake else { return }
                bound.value.handshake = nil
                waiting.fail(BenchError("no answer from the broker within 30 s"))
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            return promise.futureResult
        }.get()
        return try await answer.get()
    }
}
