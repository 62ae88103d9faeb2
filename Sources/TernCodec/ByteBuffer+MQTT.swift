public import NIOCore

/// The data representations of MQTT 5.0 §1.5, read and written on `ByteBuffer`.
///
/// Every read throws ``TernError`` with *Malformed Packet* when the bytes run out or break an
/// encoding rule, so a caller never has to check lengths itself.
extension ByteBuffer {
    /// The largest value a Variable Byte Integer can hold (MQTT 5.0 §1.5.5).
    public static let maximumVariableByteInteger: UInt32 = 268_435_455

    /// How many bytes the Variable Byte Integer encoding of `value` takes.
    @inlinable
    public static func variableByteIntegerSize(_ value: UInt32) -> Int {
        switch value {
        case 0..<128: return 1
        case 128..<16_384: return 2
        case 16_384..<2_097_152: return 3
        default: return 4
        }
    }

    /// Writes a Variable Byte Integer (MQTT 5.0 §1.5.5) in its minimal form.
    @discardableResult
    @inlinable
    public mutating func writeVariableByteInteger(_ value: UInt32) -> Int {
        precondition(value <= Self.maximumVariableByteInteger, "Variable Byte Integer out of range")
        var remaining = value
        var written = 0
        repeat {
            var byte = UInt8(truncatingIfNeeded: remaining & 0x7F)
            remaining >>= 7
            if remaining > 0 { byte |= 0x80 }
            self.writeInteger(byte)
            written += 1
        } while remaining > 0
        return written
    }

    /// Reads a Variable Byte Integer. Non-minimal encodings are accepted, a fifth byte is not.
    /// Reads a Variable Byte Integer (MQTT 5.0 §1.5.5).
    public mutating func readMQTTVariableByteInteger() throws(TernError) -> UInt32 {
        var value: UInt32 = 0
        var shift: UInt32 = 0
        while true {
            guard let byte = self.readInteger(as: UInt8.self) else {
                throw .malformedPacket("the packet ends inside a Variable Byte Integer")
            }
            value |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift == 28 {
                throw .malformedPacket("a Variable Byte Integer is longer than four bytes")
            }
        }
    }

    mutating func readMQTTByte(_ field: StaticString) throws(TernError) -> UInt8 {
        guard let value = self.readInteger(as: UInt8.self) else {
            throw .malformedPacket("the packet ends before its \(field)")
        }
        return value
    }

    mutating func readMQTTUInt16(_ field: StaticString) throws(TernError) -> UInt16 {
        guard let value = self.readInteger(as: UInt16.self) else {
            throw .malformedPacket("the packet ends before its \(field)")
        }
        return value
    }

    mutating func readMQTTUInt32(_ field: StaticString) throws(TernError) -> UInt32 {
        guard let value = self.readInteger(as: UInt32.self) else {
            throw .malformedPacket("the packet ends before its \(field)")
        }
        return value
    }

    /// Reads Binary Data (MQTT 5.0 §1.5.6) as a slice that shares this buffer's storage.
    mutating func readMQTTBinary(_ field: StaticString) throws(TernError) -> ByteBuffer {
        let length = try self.readMQTTUInt16(field)
        guard let slice = self.readSlice(length: Int(length)) else {
            throw .malformedPacket("the \(field) is longer than the rest of the packet")
        }
        return slice
    }

    /// Reads a UTF-8 Encoded String (MQTT 5.0 §1.5.4) as a validated slice, without allocating.
    mutating func readMQTTStringSlice(_ field: StaticString) throws(TernError) -> ByteBuffer {
        let slice = try self.readMQTTBinary(field)
        guard slice.withUnsafeReadableBytes({ UTF8Validation.isValidMQTTString($0) }) else {
            throw .malformedPacket("the \(field) is not well-formed UTF-8 or contains U+0000")
        }
        return slice
    }

    /// Reads a UTF-8 Encoded String (MQTT 5.0 §1.5.4).
    mutating func readMQTTString(_ field: StaticString) throws(TernError) -> String {
        let slice = try self.readMQTTStringSlice(field)
        return String(buffer: slice)
    }

    /// Writes Binary Data: a two-byte length, then the bytes.
    mutating func writeMQTTBinary(_ bytes: ByteBuffer, _ field: StaticString) throws(TernError) {
        guard bytes.readableBytes <= Int(UInt16.max) else {
            throw TernError(.implementationSpecificError, "the \(field) is longer than 65,535 bytes")
        }
        self.writeInteger(UInt16(bytes.readableBytes))
        self.writeImmutableBuffer(bytes)
    }

    /// Writes a UTF-8 Encoded String after checking MQTT's rules: at most 65,535 bytes, no U+0000.
    mutating func writeMQTTString(_ string: String, _ field: StaticString) throws(TernError) {
        var string = string
        let valid = string.withUTF8 { utf8 in
            utf8.count <= Int(UInt16.max) && !utf8.contains(0)
        }
        guard valid else {
            throw TernError(.implementationSpecificError, "the \(field) is longer than 65,535 bytes or contains U+0000")
        }
        self.writeInteger(UInt16(string.utf8.count))
        self.writeString(string)
    }

    /// Writes a string slice already known to be valid (a decoded or validated value).
    mutating func writeMQTTValidatedString(_ bytes: ByteBuffer) {
        self.writeInteger(UInt16(truncatingIfNeeded: bytes.readableBytes))
        self.writeImmutableBuffer(bytes)
    }
}

extension String {
    /// The length of this string as an MQTT UTF-8 Encoded String, prefix included.
    var mqttEncodedLength: Int { 2 + self.utf8.count }
}
