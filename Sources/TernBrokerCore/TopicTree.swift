import Synchronization
public import TernCodec

/// The subscriptions of every session, indexed by topic level (MQTT 5.0 §4.7, §4.8.2).
///
/// Matching walks the levels of a topic name once, following the exact level, `+` and `#` at each
/// step, so its cost grows with the depth of the topic and the number of matches, not with the
/// number of subscriptions. Topics starting with `$` are not matched by a wildcard in the first
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

    struct SharedGroup: Sendable {
        var members: [Entry] = []
        /// Where the next round-robin choice starts; shared by copies of the tree, and moved by
        /// matching without a write lock.
        let cursor = SharedGroupCursor()
    }

    final class SharedGroupCursor: Sendable {
        let position = Atomic<Int>(0)
    }

    struct Node: Sendable {
        var children: [Substring: Node] = [:]
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
            levels: filter.filter.split(separator: "/", omittingEmptySubsequences: false)[...],
            shareName: filter.shareName,
            entry: entry
        )
        if !existed { count += 1 }
        return existed
    }

    private static func insert(into node: inout Node, levels: ArraySlice<Substring>, shareName: String?, entry: Entry)
        -> Bool
    {
        guard let level = levels.first else {
            if let shareName {
                var group = node.shared[shareName, default: SharedGroup()]
                defer { node.shared[shareName] = group }
                if let index = group.members.firstIndex(where: { $0.clientID == entry.clientID }) {
                    group.members[index] = entry
                    return true
                }
                group.members.append(entry)
                return false
            }
            return node.subscribers.updateValue(entry, forKey: entry.clientID) != nil
        }
        return insert(
            into: &node.children[level, default: Node()],
            levels: levels.dropFirst(),
            shareName: shareName,
            entry: entry
        )
    }

    /// Removes the subscription of `session` to `filter`; one of another session with the same
    /// client identifier (a newer session, say) stays.
    /// - Returns: whether it existed.
    @discardableResult
    public mutating func unsubscribe(_ filter: TopicFilter, session: SessionReference) -> Bool {
        let removed = Self.remove(
            from: &root,
            levels: filter.filter.split(separator: "/", omittingEmptySubsequences: false)[...],
            shareName: filter.shareName,
            session: session
        )
        if removed { count -= 1 }
        return removed
    }

    private static func remove(
        from node: inout Node,
        levels: ArraySlice<Substring>,
        shareName: String?,
        session: SessionReference
    ) -> Bool {
        guard let level = levels.first else {
            if let shareName {
                guard var group = node.shared[shareName],
                    let index = group.members.firstIndex(where: { $0.session === session })
                else { return false }
                group.members.remove(at: index)
                node.shared[shareName] = group.members.isEmpty ? nil : group
                return true
            }
            guard node.subscribers[session.clientID]?.session === session else { return false }
            node.subscribers[session.clientID] = nil
            return true
        }
        guard var child = node.children[level] else { return false }
        let removed = remove(from: &child, levels: levels.dropFirst(), shareName: shareName, session: session)
        node.children[level] = child.isEmpty ? nil : child
        return removed
    }

    /// A matched subscription: the entry, and for shared subscriptions the group it was chosen from.
    public struct Match: Sendable, Hashable {
        public var entry: Entry
        public var isShared: Bool
    }

    /// Every subscription that matches `topic`. For each shared group that matches, one member is
    /// chosen round robin; `isConnected` lets the choice skip members that are offline.
    public func match(_ topic: String, isConnected: (SessionReference) -> Bool) -> [Match] {
        var matches: [Match] = []
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        let isDollar = topic.utf8.first == UInt8(ascii: "$")
        Self.collect(
            root,
            levels: levels[...],
            atRoot: true,
            isDollar: isDollar,
            into: &matches,
            isConnected: isConnected
        )
        return matches
    }

    private static func collect(
        _ node: Node,
        levels: ArraySlice<Substring>,
        atRoot: Bool,
        isDollar: Bool,
        into matches: inout [Match],
        isConnected: (SessionReference) -> Bool
    ) {
        let wildcardsAllowed = !(atRoot && isDollar)
        // `#` also matches the parent level itself (§4.7.1.2: "sport/#" matches "sport").
        if wildcardsAllowed, let all = node.children["#"] {
            take(all, into: &matches, isConnected: isConnected)
        }
        guard let level = levels.first else {
            take(node, into: &matches, isConnected: isConnected)
            return
        }
        let rest = levels.dropFirst()
        if let child = node.children[level] {
            collect(
                child,
                levels: rest,
                atRoot: false,
                isDollar: isDollar,
                into: &matches,
                isConnected: isConnected
            )
        }
        if wildcardsAllowed, level != "+", let any = node.children["+"] {
            collect(
                any,
                levels: rest,
                atRoot: false,
                isDollar: isDollar,
                into: &matches,
                isConnected: isConnected
            )
        }
    }

    private static func take(_ node: Node, into matches: inout [Match], isConnected: (SessionReference) -> Bool) {
        for entry in node.subscribers.values { matches.append(Match(entry: entry, isShared: false)) }
        for group in node.shared.values {
            let count = group.members.count
            // Loops matching at the same moment may pick the same member; each message still goes
            // to one member only.
            let start = group.cursor.position.load(ordering: .relaxed)
            var chosen: Int?
            for step in 0..<count {
                let index = (start + step) % count
                if isConnected(group.members[index].session) {
                    chosen = index
                    break
                }
            }
            let index = chosen ?? start % count
            matches.append(Match(entry: group.members[index], isShared: true))
            group.cursor.position.store((index + 1) % count, ordering: .relaxed)
        }
    }
}
