import NIOCore
import NIOHTTP1

/// What the metrics listener answers: `/metrics` in Prometheus' text format, `/health` while the
/// process serves, and `/ready` once the store is loaded and every MQTT listener is bound.
struct MetricsEndpoints: Sendable {
    /// The exposition text of a scrape.
    let scrape: @Sendable () -> [UInt8]
    /// Whether the broker accepts MQTT connections now.
    let isReady: @Sendable () -> Bool

    struct Response {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]
    }

    /// Prometheus' text exposition format, version 0.0.4.
    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    func respond(method: HTTPMethod, uri: String) -> Response {
        guard method == .GET || method == .HEAD else {
            return Response(status: .methodNotAllowed, contentType: "text/plain", body: Array("GET only\n".utf8))
        }
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch path {
        case "/metrics":
            return Response(status: .ok, contentType: Self.prometheusContentType, body: scrape())
        case "/health":
            return Response(status: .ok, contentType: "text/plain", body: Array("ok\n".utf8))
        case "/ready":
            return isReady()
                ? Response(status: .ok, contentType: "text/plain", body: Array("ready\n".utf8))
                : Response(
                    status: .serviceUnavailable,
                    contentType: "text/plain",
                    body: Array("not ready: loading the store or binding listeners\n".utf8)
                )
        default:
            return Response(
                status: .notFound,
                contentType: "text/plain",
                body: Array("not found: try /metrics, /health or /ready\n".utf8)
            )
        }
    }
}

/// Serves ``MetricsEndpoints`` over NIO's HTTP/1.1 codec: one response per request, keep-alive
/// as the client asks.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: MetricsEndpoints
    private var request: HTTPRequestHead?

    init(endpoints: MetricsEndpoints) { self.endpoints = endpoints }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // no endpoint takes a body
        case .end:
            guard let head = request else { return }
            request = nil
            let response = endpoints.respond(method: head.method, uri: head.uri)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: "\(response.body.count)")
            let keepAlive = head.isKeepAlive
            headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
            let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
            context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
            if head.method != .HEAD {
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))),
                    promise: nil
                )
            }
            let written = context.writeAndFlushWithPromise(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                written.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushWithPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise.futureResult
    }
}
