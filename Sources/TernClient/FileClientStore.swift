import NIOCore
import Synchronization
import TernCodec

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A durable ``ClientStore``: one file per client identifier in a directory of its own.
///
/// The in-flight flows are kept in MQTT's own wire format (each PUBLISH and PUBREL as the packet
/// that would be sent), followed by the inbound QoS 2 identifiers. Each change rewrites the file
/// through a temporary file that is fsynced and renamed over the old one, and the directory is
/// fsynced too, so a power cut leaves either the old state or the new one, never a torn file.
/// (Paho C keeps one unsynced file per message and has lost messages on power loss.)
///
/// Written by hand rather than with SQLite because the state is a handful of packets that is
/// always read and written whole; the MQTT encoder already is its serialisation.
public final class FileClientStore: ClientStore {
    public let directory: String
    /// Serialises writers in this process; different clients could use separate stores.
    private let lock = Mutex(())
    private static let magic = Array("TERN-CLIENT-SESSION 1\n".utf8)

    /// - Parameter directory: Where the files live; created if missing.
    public init(directory: String) throws {
        self.directory = directory
        if mkdir(directory, 0o700) != 0, errno != EEXIST {
            throw MQTTClientError(
                .refused,
                reasonString: "cannot create the store directory \(directory): errno \(errno)"
            )
        }
    }

    private func path(for clientID: String) -> String {
        // Client identifiers may hold any character; hex keeps file names safe and distinct.
        let name = clientID.utf8.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
        return "\(directory)/\(name.isEmpty ? "-" : name).session"
    }

    public func load(clientID: String) throws -> ClientSessionState? {
        try lock.withLock { _ in
            guard let bytes = try Self.readFile(path(for: clientID)) else { return nil }
            return try Self.decode(bytes)
        }
    }

    public func save(_ state: ClientSessionState, clientID: String) throws {
        try lock.withLock { _ in
            let target = path(for: clientID)
            let temporary = target + ".tmp"
            try Self.writeDurably(Self.encode(state), to: temporary)
            guard rename(temporary, target) == 0 else { throw Self.failure("rename \(temporary)") }
            try Self.syncDirectory(directory)
        }
    }

    public func remove(clientID: String) throws {
        try lock.withLock { _ in
            if unlink(path(for: clientID)) != 0, errno != ENOENT { throw Self.failure("unlink") }
            try Self.syncDirectory(directory)
        }
    }

    // MARK: Format

    static func encode(_ state: ClientSessionState) throws -> ByteBuffer {
        var buffer = ByteBuffer(bytes: magic)
        buffer.writeInteger(UInt32(state.outbound.count))
        for flow in state.outbound {
            let packet: MQTTPacket
            switch flow {
            case .publish(let publish): packet = .publish(publish)
            case .release(let id): packet = .pubrel(PublishAcknowledgement(packetIdentifier: id))
            }
            try packet.write(to: &buffer, version: .v5)
        }
        buffer.writeInteger(UInt32(state.inboundQoS2.count))
        for id in state.inboundQoS2.sorted() { buffer.writeInteger(id) }
        return buffer
    }

    static func decode(_ bytes: ByteBuffer) throws -> ClientSessionState {
        var buffer = bytes
        guard buffer.readBytes(length: magic.count) == magic, let count = buffer.readInteger(as: UInt32.self) else {
            throw MQTTClientError(.refused, reasonString: "not a Tern client session file")
        }
        var decoder = MQTTPacketDecoder(protocolVersion: .v5)
        var outbound: [OutboundFlow] = []
        for _ in 0..<count {
            switch try decoder.decodePacket(from: &buffer) {
            case .publish(let publish)?: outbound.append(.publish(publish))
            case .pubrel(let release)?: outbound.append(.release(packetIdentifier: release.packetIdentifier))
            default: throw MQTTClientError(.refused, reasonString: "a client session file is damaged")
            }
        }
        guard let inboundCount = buffer.readInteger(as: UInt32.self) else {
            throw MQTTClientError(.refused, reasonString: "a client session file is truncated")
        }
        var inbound: Set<UInt16> = []
        for _ in 0..<inboundCount {
            guard let id = buffer.readInteger(as: UInt16.self) else {
                throw MQTTClientError(.refused, reasonString: "a client session file is truncated")
            }
            inbound.insert(id)
        }
        return ClientSessionState(outbound: outbound, inboundQoS2: inbound)
    }

    // MARK: Files

    private static func failure(_ what: String) -> MQTTClientError {
        MQTTClientError(.refused, reasonString: "\(what) failed: errno \(errno)")
    }

    private static func readFile(_ path: String) throws -> ByteBuffer? {
        let descriptor = open(path, O_RDONLY)
        if descriptor < 0 {
            if errno == ENOENT { return nil }
            throw failure("open \(path)")
        }
        defer { close(descriptor) }
        var buffer = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 { throw failure("read \(path)") }
            if count == 0 { return buffer }
            buffer.writeBytes(chunk[0..<count])
        }
    }

    private static func writeDurably(_ buffer: ByteBuffer, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw failure("open \(path)") }
        defer { close(descriptor) }
        try buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 { throw failure("write \(path)") }
                offset += written
            }
        }
        guard fsync(descriptor) == 0 else { throw failure("fsync \(path)") }
    }

    private static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw failure("open \(path)") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure("fsync \(path)") }
    }
}
