import Foundation
import Synchronization
import TernBroker
import TernBrokerTesting

/// Runs clients nobody here wrote (Mosquitto's command-line tools, paho-mqtt for Python) against
/// an embedded broker. Each process is started by the test and stopped only by its own PID.
enum Peers {
    static func which(_ name: String) -> String? {
        for directory in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static let mosquittoAvailable = which("mosquitto_pub") != nil && which("mosquitto_sub") != nil

    /// Debian's python3-paho-mqtt installs for the system interpreter, not for other pythons on PATH.
    static let pahoAvailable: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { return false }
        return (try? runBlocking("/usr/bin/python3", ["-c", "import paho.mqtt.client"], timeout: 20).status) == 0
    }()

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// A started process whose output is collected.
    final class Running: @unchecked Sendable {
        // @unchecked: `process` and the pipes are touched only by the test that owns this value,
        // and Foundation's Process and Pipe are themselves thread-safe for these calls.
        let process = Process()
        let out = Pipe()
        let err = Pipe()

        init(_ path: String, _ arguments: [String], input: Data? = nil) throws {
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            process.standardOutput = out
            process.standardError = err
            let stdin = Pipe()
            if input != nil { process.standardInput = stdin }
            try process.run()
            if let input {
                stdin.fileHandleForWriting.write(input)
                try stdin.fileHandleForWriting.close()
            }
        }

        /// Waits for exit, killing the process (by its own PID) after `timeout` seconds, on a
        /// thread of its own: the wait does not hold one of the few threads every async test shares.
        func finish(timeout: Double) async -> Output {
            await withCheckedContinuation { continuation in
                Thread { continuation.resume(returning: self.finishBlocking(timeout: timeout)) }.start()
            }
        }

        /// ``finish(timeout:)`` for synchronous code (a `defer`), blocking the calling thread.
        func finishBlocking(timeout: Double) -> Output {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            return Output(status: process.terminationStatus, stdout: stdout, stderr: stderr)
        }

        func killNow() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    @discardableResult
    static func run(_ path: String, _ arguments: [String], timeout: Double = 10) async throws -> Output {
        try await runOffPool(path, arguments, timeout: timeout)
    }

    /// ``run(_:_:timeout:)`` for synchronous code, blocking the calling thread.
    static func runBlocking(_ path: String, _ arguments: [String], timeout: Double = 10) throws -> Output {
        try Running(path, arguments).finishBlocking(timeout: timeout)
    }

    /// ``run(_:_:timeout:)`` on a thread of its own: waiting for the process does not hold one of
    /// the few threads every async test shares.
    static func runOffPool(_ path: String, _ arguments: [String], timeout: Double = 10, input: Data? = nil)
        async throws -> Output
    {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(
                    with: Result {
                        let running = try Running(path, arguments, input: input)
                        return running.finishBlocking(timeout: timeout)
                    }
                )
            }.start()
        }
    }

    /// Waits (bounded) until the broker holds `count` subscriptions, or exactly `count` if
    /// `exactly` (to see an earlier subscriber's session end before the next one starts).
    static func waitForSubscriptions(
        _ broker: MQTTBroker,
        count: Int,
        exactly: Bool = false,
        timeout: Double = 30
    ) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while exactly ? broker.subscriptionCount != count : broker.subscriptionCount < count {
            guard Date() < deadline else { throw PeerTimeout(what: "\(count) subscriptions") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Starts a server process on a port from 20000…29999 (below Linux's ephemeral range, so that
    /// parallel tests' client sockets cannot take it first), waits until it accepts connections,
    /// and tries another port if the process exits at start. `command` gives the executable and arguments for a port.
    static func startOnFreePort(_ command: (Int) throws -> (String, [String])) async throws -> (Running, port: Int) {
        for _ in 0..<10 {
            let port = nextPort()
            let (path, arguments) = try command(port)
            let candidate = try Running(path, arguments)
            // Started when it accepts a connection; a server that could not bind exits instead.
            let deadline = Date().addingTimeInterval(10)
            while candidate.process.isRunning, Date() < deadline {
                if await accepts(port: port) {
                    if candidate.process.isRunning { return (candidate, port) }
                    break
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            candidate.killNow()
            _ = await candidate.finish(timeout: 1)
        }
        throw PeerTimeout(what: "a server on any of 10 ports")
    }

    /// The ports handed out so far, from a random start: no two servers of this test process are
    /// given the same one. With random picks, two suites once drew the same port, and a server that
    /// could not bind was taken for running because the other one accepted.
    private static let issuedPorts = Mutex(Int.random(in: 20_000...24_999))

    static func nextPort() -> Int {
        issuedPorts.withLock { port in
            port = port >= 29_999 ? 20_000 : port + 1
            return port
        }
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    static func accepts(port: Int) async -> Bool {
        guard let probe = try? await TestClient.connect(port: port) else { return false }
        await probe.close()
        return true
    }

    static func script(_ name: String) -> String {
        Bundle.module.path(forResource: "Scripts/\(name)", ofType: nil)!
    }
}

struct PeerTimeout: Error { var what: String }
