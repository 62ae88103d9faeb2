import NIOHTTP1
import Testing

@testable import TernBroker

/// What the metrics listener answers, without sockets.
@Suite("Metrics listener endpoints")
struct MetricsEndpointsTests {
    static func endpoints(ready: Bool) -> MetricsEndpoints {
        MetricsEndpoints(scrape: { Array("tern_up 1\n".utf8) }, isReady: { ready })
    }

    @Test("/ready is 503 until the store is loaded and the listeners are bound, then 200; /health is 200 throughout")
    func readiness() {
        let loading = Self.endpoints(ready: false)
        #expect(loading.respond(method: .GET, uri: "/ready").status == .serviceUnavailable)
        #expect(loading.respond(method: .GET, uri: "/health").status == .ok)
        let serving = Self.endpoints(ready: true)
        #expect(serving.respond(method: .GET, uri: "/ready").status == .ok)
    }

    @Test("/metrics is Prometheus text 0.0.4, a query string is ignored, HEAD is allowed")
    func metrics() {
        let response = Self.endpoints(ready: true).respond(method: .GET, uri: "/metrics?name[]=x")
        #expect(response.status == .ok)
        #expect(response.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(String(decoding: response.body, as: UTF8.self) == "tern_up 1\n")
        #expect(Self.endpoints(ready: true).respond(method: .HEAD, uri: "/metrics").status == .ok)
    }

    @Test("Other paths are 404 and other methods 405")
    func refusals() {
        let endpoints = Self.endpoints(ready: true)
        #expect(endpoints.respond(method: .GET, uri: "/").status == .notFound)
        #expect(endpoints.respond(method: .POST, uri: "/metrics").status == .methodNotAllowed)
    }
}
