import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TernBridge
import TernBroker
import TernConfig
import TernStorePostgres
import TernStoreSQLite

/// `tern serve`: runs the broker.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the MQTT broker.",
        discussion: """
            With no arguments the broker listens on port 1883 on the loopback addresses and allows
            anonymous clients, like Mosquitto 2 without a configuration file, and keeps its state
            in memory. --data DIR turns on the durable store in DIR/tern.db (as `persistence true`
            and `persistence_location DIR` would).
            """
    )

    @Option(name: .shortAndLong, help: "Listen on this port on the loopback addresses (or on the -c listeners' place).")
    var port: Int?

    @Option(name: [.customShort("c"), .long], help: "A mosquitto.conf-style configuration file.")
    var config: String?

    @Option(name: .long, help: "Keep sessions and messages in DIR/tern.db across restarts (persistence true).")
    var data: String?

    @Option(
        name: .customLong("cluster-store"),
        help: "Serve as a node of the cluster in this PostgreSQL database (cluster_store).",
    )
    var clusterStore: String?

    @Option(name: .customLong("cluster-node"), help: "This cluster node's name (cluster_node).")
    var clusterNode: String?

    @Flag(name: .shortAndLong, help: "Log every connection event.")
    var verbose = false

    @Flag(
        help: ArgumentHelp(
            "Check the configuration and exit: 0 when it is good, 3 when not.",
            discussion:
                "Parses -c FILE, reads its password and ACL files, loads every listener's TLS certificate and key, and prints what the broker would listen on. Nothing is bound and the store is not opened."
        )
    )
    var check = false

    @Option(
        help: ArgumentHelp(
            "Event loop threads (default: one per core).",
            discussion:
                "One thread gives the lowest latency and CPU per message at moderate load; one per core the most throughput."
        )
    )
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() async throws {
        var configuration = MosquittoConfiguration()
        if let config {
            let text: String
            do {
                text = try String(contentsOfFile: config, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read \(config): \(error.localizedDescription)")
            }
            do {
                configuration = try MosquittoConfiguration.parse(text, file: config)
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                throw ExitCode(3)
            }
        }
        if let port {
            let hosts = config == nil ? ["127.0.0.1", "::1"] : Array(Set(configuration.options.listeners.map(\.host)))
            configuration.options.listeners = hosts.map { .init(host: $0, port: port) }
            configuration.listenerOrigins = hosts.map { _ in ("-p", 0) }
        }
        if check {
            let report = ConfigurationCheck(configuration, data: data).run()
            print(report.lines.joined(separator: "\n"))
            for problem in report.problems { FileHandle.standardError.write(Data("tern: \(problem)\n".utf8)) }
            throw ExitCode(report.problems.isEmpty ? 0 : 3)
        }
        let level: Logger.Level =
            verbose || configuration.logTypes.contains("all") || configuration.logTypes.contains("debug")
            ? .debug : .info
        // log_dest: Mosquitto logs to stderr when none is given; several destinations all receive every line.
        var sinks: [FileLogHandler.Sink] = []
        for case .file(let path) in configuration.logDestinations {
            do {
                sinks.append(try FileLogHandler.Sink(path: path))
            } catch {
                FileHandle.standardError.write(
                    Data("tern: cannot open log file \(path): \(error.localizedDescription)\n".utf8)
                )
                throw ExitCode(3)
            }
        }
        let destinations = configuration.logDestinations.isEmpty ? [.stderr] : configuration.logDestinations
        let fileSinks = sinks
        LoggingSystem.bootstrap { label in
            var sinkIndex = 0
            let handlers: [any LogHandler] = destinations.map { destination in
                var handler: any LogHandler
                switch destination {
                case .stdout: handler = StreamLogHandler.standardOutput(label: label)
                case .stderr: handler = StreamLogHandler.standardError(label: label)
                case .file:
                    handler = FileLogHandler(label: label, sink: fileSinks[sinkIndex])
                    sinkIndex += 1
                }
                handler.logLevel = level
                return handler
            }
            return MultiplexLogHandler(handlers)
        }
        var logger = Logger(label: "tern")
        logger.logLevel = level
        for warning in configuration.warnings { logger.warning("\(warning)") }

        if let data {
            configuration.persistence.enabled = true
            configuration.persistence.location = data
        }
        if let clusterStore { configuration.cluster.storeURL = clusterStore }
        if let clusterNode { configuration.cluster.node = clusterNode }
        if configuration.cluster.isEnabled {
            try await joinCluster(&configuration, logger: logger)
        } else if configuration.persistence.enabled {
            let settings = configuration.persistence
            if !settings.location.isEmpty {
                try? FileManager.default.createDirectory(atPath: settings.location, withIntermediateDirectories: true)
            }
            let opening = ContinuousClock.now
            do {
                configuration.options.store = try SQLiteStore(
                    path: settings.path,
                    durability: settings.storeDurability,
                    logger: logger
                )
            } catch {
                FileHandle.standardError.write(Data("tern: cannot open the store \(settings.path): \(error)\n".utf8))
                throw ExitCode(3)
            }
            let opened = ContinuousClock.now - opening
            logger.info(
                "persistence on",
                metadata: [
                    "store": "\(settings.path)", "durability": "\(settings.durability)",
                    "read-ms":
                        "\(opened.components.seconds * 1000 + opened.components.attoseconds / 1_000_000_000_000_000)",
                ]
            )
        }

        let eventLoops: any EventLoopGroup =
            threads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? MultiThreadedEventLoopGroup.singleton
        let broker = MQTTBroker(options: configuration.options, group: eventLoops, logger: logger)
        // SIGHUP reloads the password and ACL files without dropping anyone, as in Mosquitto.
        signal(SIGHUP, SIG_IGN)
        let hangUp = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangUp.setEventHandler { broker.reloadSecurity() }
        hangUp.resume()
        defer { hangUp.cancel() }
        var services: [any Service] = [broker]
        for bridge in configuration.bridges {
            do {
                services.append(
                    try MQTTBridge(configuration: bridge, broker: broker, group: eventLoops, logger: logger)
                )
            } catch {
                FileHandle.standardError.write(Data("tern: connection \(bridge.name): \(error)\n".utf8))
                throw ExitCode(3)
            }
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}

extension Serve {
    /// Makes this broker a node of the cluster `configuration.cluster` names: its store is the
    /// cluster's database, and its place in the cluster is taken before anything listens.
    func joinCluster(_ configuration: inout MosquittoConfiguration, logger: Logger) async throws {
        let settings = configuration.cluster
        guard let url = settings.storeURL, let node = settings.node, !node.isEmpty else {
            FileHandle.standardError.write(
                Data("tern: a cluster node needs cluster_node NAME (or --cluster-node)\n".utf8)
            )
            throw ExitCode(3)
        }
        var password = ProcessInfo.processInfo.environment["TERN_CLUSTER_PASSWORD"]
        if let file = settings.passwordFile {
            do {
                let text = try String(contentsOfFile: file, encoding: .utf8)
                password = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
            } catch {
                FileHandle.standardError.write(
                    Data("tern: cannot read cluster_password_file \(file): \(error.localizedDescription)\n".utf8)
                )
                throw ExitCode(3)
            }
        }
        do {
            let database = try PostgresStoreConfiguration(url: url, password: password)
            let cluster = try await PostgresCluster(configuration: database, nodeName: node, logger: logger)
            configuration.options.store = try PostgresStore(
                configuration: database,
                clusterNode: cluster.nodeNumber,
                logger: logger
            )
            configuration.options.cluster = cluster
            logger.info(
                "cluster node",
                metadata: [
                    "node": "\(node)", "number": "\(cluster.nodeNumber)",
                    "database": "\(database.host):\(database.port)/\(database.database)",
                    "schema": "\(database.schema)",
                ]
            )
        } catch {
            FileHandle.standardError.write(Data("tern: cannot join the cluster at \(url): \(error)\n".utf8))
            throw ExitCode(3)
        }
    }
}

extension PersistenceSettings {
    /// The SQLite store's durability for these settings.
    var storeDurability: SQLiteStore.Durability {
        switch durability {
        case .commit:
            return .commit
        case .lossWindow:
            // Mosquitto: autosave_interval 0 saves only at shutdown; with autosave_on_changes the
            // interval is a change count.
            let never = Duration.seconds(Int64(Int32.max))
            if autosaveOnChanges { return .lossWindow(interval: never, changes: max(1, autosaveInterval ?? 1)) }
            let seconds = autosaveInterval ?? 1
            return .lossWindow(interval: seconds == 0 ? never : .seconds(seconds), changes: 0)
        }
    }
}
