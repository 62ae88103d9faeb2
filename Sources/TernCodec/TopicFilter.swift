/// A validated Topic Filter: what a SUBSCRIBE or UNSUBSCRIBE names (MQTT 5.0 §4.7, §4.8.2).
///
/// A filter may use `+` for one whole level and `#` for the last level and everything beneath.
/// A shared subscription `$share/{ShareName}/{filter}` is parsed into ``shareName`` and
/// ``filter``; for an ordinary subscription ``shareName`` is `nil` and ``filter`` is the whole
/// string.
public struct TopicFilter: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The filter exactly as the client sent it, `$share/` prefix included.
    public let string: String
    /// The share name of a shared subscription, or `nil`.
    public let shareName: String?
    /// The part that is matched against topic names.
    public let filter: String

    /// Validates `string` as a Topic Filter.
    ///
    /// - Throws: ``TernError`` with *Malformed Packet* (0x81) when the filter breaks the
    ///   syntax rules of §4.7.1 or §4.8.2: empty, a wildcard that is not a whole level, `#` not
    ///   last, U+0000, or a `$share/` filter without a share name or without a filter after it.
    public init(_ string: String) throws(TernError) {
        guard !string.isEmpty else { throw .malformedPacket("a topic filter is empty") }
        guard string.utf8.count <= Int(UInt16.max) else {
            throw .malformedPacket("a topic filter is longer than 65,535 bytes")
        }
        guard !string.utf8.contains(0) else { throw .malformedPacket("a topic filter contains U+0000") }
        self.string = string
        if string.utf8.starts(with: "$share/".utf8) {
            let rest = string.utf8.dropFirst(7)
            guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else {
                throw .malformedPacket("a shared subscription '\(string)' has no topic filter after its share name")
            }
            let name = rest[rest.startIndex..<slash]
            guard !name.isEmpty else {
                throw .malformedPacket("a shared subscription '\(string)' has an empty share name")
            }
            guard !name.contains(UInt8(ascii: "+")), !name.contains(UInt8(ascii: "#")) else {
                throw .malformedPacket("the share name in '\(string)' contains a wildcard")
            }
            let filter = rest[rest.index(after: slash)...]
            guard !filter.isEmpty else {
                throw .malformedPacket("a shared subscription '\(string)' has an empty topic filter")
            }
            self.shareName = String(Substring(name))
            self.filter = String(Substring(filter))
        } else {
            self.shareName = nil
            self.filter = string
        }
        try Self.checkWildcards(self.filter, whole: string)
    }

    private static func checkWildcards(_ filter: String, whole: String) throws(TernError) {
        let bytes = Array(filter.utf8)
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case UInt8(ascii: "#"):
                // §4.7.1.2: `#` stands alone or after a separator, and is the last character.
                guard index == bytes.count - 1, index == 0 || bytes[index - 1] == UInt8(ascii: "/") else {
                    throw .malformedPacket("'#' in topic filter '\(whole)' is not a whole last level")
                }
            case UInt8(ascii: "+"):
                // §4.7.1.3: `+` occupies an entire level.
                let startsLevel = index == 0 || bytes[index - 1] == UInt8(ascii: "/")
                let endsLevel = index == bytes.count - 1 || bytes[index + 1] == UInt8(ascii: "/")
                guard startsLevel, endsLevel else {
                    throw .malformedPacket("'+' in topic filter '\(whole)' is not a whole level")
                }
            default:
                continue
            }
        }
    }

    /// Whether this is a `$share/{ShareName}/{filter}` subscription.
    public var isShared: Bool { shareName != nil }

    /// Whether the matched part uses `+` or `#`.
    public var hasWildcards: Bool { filter.utf8.contains(UInt8(ascii: "+")) || filter.utf8.contains(UInt8(ascii: "#")) }

    public var description: String { string }

    public static func < (lhs: TopicFilter, rhs: TopicFilter) -> Bool { lhs.string < rhs.string }
}

extension TopicFilter {
    /// Whether this filter (ignoring any share name) matches `topic` (§4.7).
    public func matches(_ topic: String) -> Bool {
        let filterLevels = filter.split(separator: "/", omittingEmptySubsequences: false)
        let topicLevels = topic.split(separator: "/", omittingEmptySubsequences: false)
        if topic.utf8.first == UInt8(ascii: "$"), let first = filterLevels.first, first == "+" || first == "#" {
            return false
        }
        var index = 0
        while index < filterLevels.count {
            let level = filterLevels[index]
            if level == "#" { return true }
            guard index < topicLevels.count else { return false }
            if level != "+", level != topicLevels[index] { return false }
            index += 1
        }
        return index == topicLevels.count
    }
}
