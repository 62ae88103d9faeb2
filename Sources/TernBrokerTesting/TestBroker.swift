public import TernBroker

/// Runs a real broker on 127.0.0.1 and a free port for the duration of `body`, then shuts it
/// down. For tests of programs that talk to Tern, and for Tern's own tests.
///
/// ```swift
/// try await withTestBroker { broker, port in
///     // connect a client to 127.0.0.1:port
/// }
/// ```
///
/// - Parameters:
///   - configure: Adjusts the options; the listener is already set to 127.0.0.1:0, `$SYS`
///     updates are off, so that tests see only their own traffic, and the connect timeout is 30 s.
///   - body: Runs while the broker listens; it gets the broker and its first listener's port (0 when
///     that is a Unix socket).
public func withTestBroker<T>(
    _ configure: (inout BrokerOptions) -> Void = { _ in },
    _ body: (MQTTBroker, Int) async throws -> T
) async throws -> T {
    var options = BrokerOptions()
    options.listeners = [.init(host: "127.0.0.1", port: 0)]
    options.sysInterval = 0
    // Test clients run on the shared cooperative pool, which other suites' blocking waits on child
    // processes can stall for seconds: a CONNECT sent late must not meet the connect timeout.
    options.connectTimeout = 30
    configure(&options)
    let broker = MQTTBroker(options: options)
    let task = Task { try await broker.run() }
    do {
        let port = try await broker.waitUntilListening()[0].port ?? 0  // 0 for a Unix socket
        let result = try await body(broker, port)
        task.cancel()
        _ = await task.result
        return result
    } catch {
        task.cancel()
        _ = await task.result
        throw error
    }
}
