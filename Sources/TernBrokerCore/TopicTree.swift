public import NIOCore
import Synchronization
public import TernCodec

/// The subscriptions of every session, indexed by topic level (MQTT 5.0 §4.7, §4.8.2).
///
/// Matching walks the levels of a topic name once, following the exact level, `+` and `#` at each
/// step, so its cost grows with the depth of the topic and the number of matches, not with the
/// number of subscriptions. Levels are keyed by their bytes, and a topic is matched as the bytes
/// it arrived in: no `String` is made and nothing is split per PUBLISH. Topics starting with `$` are not matched by a wildcard in the first
/// level (§4.7.2). Shared subscriptions live in the same tree, grouped by share name, and each
/// group delivers one copy, round robin, preferring members that are connected.
///
/// Matching never changes the tree (a shared group's round-robin cursor is an atomic counter
/// beside it), so that every event loop can match at once under a read lock
/// (``SubscriptionIndex``).
public struct TopicTree: Sendable {
    /// One subscription of one session.
    public struct Entry: Sendable, Hashable {
        public var session: SessionReference
        public var options: SubscriptionOptions
        public var identifier: UInt32?

        public init(session: SessionReference, options: SubscriptionOptions, identifier: UInt32?) {
            self.session = session
            self.options = options
            self.identifier = identifier
        }

        /// An entry for a session of its own, named by `clientID` (for tests of the tree alone).
        public init(clientID: String, options: SubscriptionOptions, identifier: UInt32?) {
            self.init(session: SessionReference(clientID: clientID), options: options, identifier: identifier)
        }

        public var clientID: String { session.clientID }
    }

    /// The members of one shared subscription (`$share/NAME/filter`).
    public struct SharedGroup: Sendable {
        var members: [Entry] = []
        /// Where the next round-robin choice starts; shared by copies of the tree, and moved by
        /// matching without a write lock.
        let cursor = SharedGroupCursor()

        /// The member that receives the next message: round robin, skipping members that are not
        /// connected while one is. Loops choosing at the same moment may pick the same member;
        /// each message still goes to one member only (§4.8.2).
        public func choose(isConnected: (SessionReference) -> Bool) -> Entry {
            let count = members.count
            let start = cursor.position.load(ordering: .relaxed)
            var chosen: Int?
            for step in 0..<count {
                let index = (start + step) % count
                if isConnected(members[index].session) {
                    chosen = index
                    break
                }
            }
            let index = chosen ?? start % count
            cursor.position.store((index + 1) % count, ordering: .relaxed)
            return members[index]
        }
    }

    final class SharedGroupCursor: Sendable {
        let position = Atomic<Int>(0)
    }

    struct Node: Sendable {
        /// By the level's UTF-8 bytes.
        var children: [ByteBuffer: Node] = [:]
        var subscribers: [String: Entry] = [:]
        var shared: [String: SharedGroup] = [:]

        var isEmpty: Bool { children.isEmpty && subscribers.isEmpty && shared.isEmpty }
    }

    var root = Node()
    /// How many subscriptions the tree holds.
    public private(set) var count = 0

    public init() {}

    /// Adds or replaces the subscription of `entry.clientID` to `filter`.
    /// - Returns: whether a subscription to the same filter already existed (§3.8.4).
    @discardableResult
    public mutating func subscribe(_ filter: TopicFilter, entry: Entry) -> Bool {
        let existed = Self.insert(
            into: &root,
            levels: Self.levels(of: filter)[...],
            shareName: filter.shareName,
            entry: entry
        )
        if !existed { count += 1 }
        return existed
    }

    /// The levels of a filter, as the keys of the tree: slices of one buffer holding the whole
    /// filter, so that a filter costs one allocation however many levels it has.
    private static func levels(of filter: TopicFilter) -> [ByteBuffer] {
        let whole = ByteBuffer(string: filter.filter)
        var levels: [ByteBuffer] = []
        var start = whole.readerIndex
        whole.withUnsafeReadableBytes { bytes in
            for (offset, byte) in bytes.enumerated() where byte == UInt8(ascii: "/") {
                levels.append(whole.getSlice(at: start, length: whole.readerIndex + offset - start)!)
                start = whole.readerIndex + offset + 1
            }
        }
        levels.append(whole.getSlice(at: start, length: whole.writerIndex - start)!)
        return levels
    }

    private static let singleLevel = ByteBuffer(string: "+")
    private static let multiLevel = ByteBuffer(string: "#")

    private static func insert(into node: inout Node, levels: ArraySlice<ByteBuffer>, shareName: String?, entry: Entry)
        -> Bool
    {
        guard let level = levels.first else {
            if let shareName { return join(&node.shared[shareName, default: SharedGroup()], entry) }
            return node.subscribers.updateValue(entry, forKey: entry.clientID) != nil
        }
        return insert(
            into: &node.children[level, default: Node()],
            levels: levels.dropFirst(),
            shareName: shareName,
            entry: entry
        )
    }

    /// Adds `entry` to a group, or replaces its client's entry there.
    /// - Returns: whether its client was a member already.
    private static func join(_ group: inout SharedGroup, _ entry: Entry) -> Bool {
        if let index = group.members.firstIndex(where: { $0.clientID == entry.clientID }) {
            group.members[index] = entry
            return true
        }
        group.members.append(entry)
        return false
    }

    /// Removes the subscription of `session` to `filter`; one of another session with the same
    /// client identifier (a newer session, say) stays.
    /// - Returns: whether it existed.
    @discardableResult
    public mutating func unsubscribe(_ filter: TopicFilter, session: SessionReference) -> Bool {
        let removed = Self.remove(
            from: &root,
            levels: Self.levels(of: filter)[...],
            shareName: filter.shareName,
            session: session
        )
        if removed { count -= 1 }
        return removed
    }

    private static func remove(
        from node: inout Node,
        levels: ArraySlice<ByteBuffer>,
        shareName: String?,
        session: SessionReference
    ) -> Bool {
        // Each node is changed where it is, through its slot: a node taken out and put back would
        // share its dictionaries with the tree meanwhile, and its first change would copy them
        // whole (every sibling of a level, each time one of them goes).
        guard let level = levels.first else {
            if let shareName {
                guard let slot = node.shared.index(forKey: shareName),
                    let index = node.shared.values[slot].members.firstIndex(where: { $0.session === session })
                else { return false }
                node.shared.values[slot].members.remove(at: index)
                if node.shared.values[slot].members.isEmpty { node.shared.remove(at: slot) }
                return true
            }
            guard node.subscribers[session.clientID]?.session === session else { return false }
            node.subscribers[session.clientID] = nil
            return true
        }
        guard let slot = node.children.index(forKey: level) else { return false }
        let removed = remove(
            from: &node.children.values[slot],
            levels: levels.dropFirst(),
            shareName: shareName,
            session: session
        )
        if node.children.values[slot].isEmpty { node.children.remove(at: slot) }
        return removed
    }

    /// A matched subscription: the entry, and for shared subscriptions the group it was chosen from.
    public struct Match: Sendable, Hashable {
        public var entry: Entry
        public var isShared: Bool
    }

    /// What a topic matches before any shared-group member is chosen: the ordinary subscriptions,
    /// and each matching shared group whole. It stays valid until the tree changes, so a caller
    /// may keep it for the topic and choose a member per message (``SharedGroup/choose(isConnected:)``).
    public struct MatchSet: Sendable {
        public var plain: [Entry] = []
        public var groups: [SharedGroup] = []

        public var isEmpty: Bool { plain.isEmpty && groups.isEmpty }
    }

    /// Every subscription that matches `topic`. For each shared group that matches, one member is
    /// chosen round robin; `isConnected` lets the choice skip members that are offline.
    public func match(_ topic: String, isConnected: (SessionReference) -> Bool) -> [Match] {
        match(ByteBuffer(string: topic), isConnected: isConnected)
    }

    /// Every subscription that matches the topic whose UTF-8 bytes are `topic`.
    public func match(_ topic: ByteBuffer, isConnected: (SessionReference) -> Bool) -> [Match] {
        let set = matchSet(topic)
        return set.plain.map { Match(entry: $0, isShared: false) }
            + set.groups.map { Match(entry: $0.choose(isConnected: isConnected), isShared: true) }
    }

    /// What the topic whose UTF-8 bytes are `topic` matches, shared groups whole.
    public func matchSet(_ topic: ByteBuffer) -> MatchSet {
        var matches = MatchSet()
        let isDollar = topic.getInteger(at: topic.readerIndex, as: UInt8.self) == UInt8(ascii: "$")
        Self.collect(root, topic: topic, from: topic.readerIndex, atRoot: true, isDollar: isDollar, into: &matches)
        return matches
    }

    /// Matches the levels of `topic` from byte index `start` (`nil`: no level is left) below `node`.
    private static func collect(
        _ node: Node,
        topic: ByteBuffer,
        from start: Int?,
        atRoot: Bool,
        isDollar: Bool,
        into matches: inout MatchSet
    ) {
        let wildcardsAllowed = !(atRoot && isDollar)
        // `#` also matches the parent level itself (§4.7.1.2: "sport/#" matches "sport").
        if wildcardsAllowed, let all = node.children[multiLevel] {
            take(all, into: &matches)
        }
        guard let start else {
            take(node, into: &matches)
            return
        }
        // The level runs to the next `/` or the end; after a `/` another level follows, maybe empty.
        let end = topic.writerIndex
        let slash = topic.withUnsafeReadableBytes { bytes -> Int? in
            let offset = start - topic.readerIndex
            return bytes[offset...].firstIndex(of: UInt8(ascii: "/")).map { $0 + topic.readerIndex }
        }
        let levelEnd = slash ?? end
        let next = slash.map { $0 + 1 }
        let level = topic.getSlice(at: start, length: levelEnd - start)!
        if let child = node.children[level] {
            collect(
                child,
                topic: topic,
                from: next,
                atRoot: false,
                isDollar: isDollar,
                into: &matches
            )
        }
        if wildcardsAllowed, let any = node.children[singleLevel] {
            collect(
                any,
                topic: topic,
                from: next,
                atRoot: false,
                isDollar: isDollar,
                into: &matches
            )
        }
    }

    private static func take(_ node: Node, into matches: inout MatchSet) {
        matches.plain.append(contentsOf: node.subscribers.values)
        matches.groups.append(contentsOf: node.shared.values)
    }
}
