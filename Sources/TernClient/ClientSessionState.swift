public import TernCodec

/// One outbound QoS 1/2 flow that waits for the server (MQTT 5.0 §4.3).
public enum OutboundFlow: Sendable, Hashable {
    /// A PUBLISH not yet acknowledged by PUBACK (QoS 1) or PUBREC (QoS 2).
    case publish(Publish)
    /// A PUBREL not yet completed by PUBCOMP.
    case release(packetIdentifier: UInt16)

    public var packetIdentifier: UInt16 {
        switch self {
        case .publish(let publish): return publish.packetIdentifier
        case .release(let id): return id
        }
    }
}

/// The client's half of a session: what must survive a reconnect and, with a durable
/// ``ClientStore``, a restart of the process. A pure value; ``MQTTClient`` drives it.
public struct ClientSessionState: Sendable, Hashable {
    /// Outbound flows in the order they started.
    public internal(set) var outbound: [OutboundFlow] = []
    /// Inbound QoS 2 packet identifiers acknowledged with PUBREC and awaiting PUBREL (§4.3.3).
    public internal(set) var inboundQoS2: Set<UInt16> = []
    var nextPacketIdentifier: UInt16 = 1
    /// The identifiers in `outbound`, so that allocating one does not scan the list.
    private var inUse: Set<UInt16> = []

    public init(outbound: [OutboundFlow] = [], inboundQoS2: Set<UInt16> = []) {
        self.outbound = outbound
        self.inboundQoS2 = inboundQoS2
        self.inUse = Set(outbound.map(\.packetIdentifier))
        if let highest = outbound.map(\.packetIdentifier).max() {
            nextPacketIdentifier = highest == .max ? 1 : highest + 1
        }
    }

    /// How a finished outbound flow ended.
    public enum Completion: Sendable, Hashable {
        case completed(packetIdentifier: UInt16, reasonCode: ReasonCode)
    }

    /// Starts a QoS 1/2 flow: gives `publish` a free packet identifier and records it.
    mutating func start(_ publish: Publish) -> Publish {
        var publish = publish
        publish.packetIdentifier = allocatePacketIdentifier()
        outbound.append(.publish(publish))
        return publish
    }

    private mutating func allocatePacketIdentifier() -> UInt16 {
        while true {
            let candidate = nextPacketIdentifier
            nextPacketIdentifier = nextPacketIdentifier == .max ? 1 : nextPacketIdentifier + 1
            if inUse.insert(candidate).inserted { return candidate }
        }
    }

    /// What a PUBACK, PUBREC or PUBCOMP from the server means for the outbound flows.
    /// - Returns: the packet to answer with (PUBREL), and the flow that ended, if one did.
    mutating func received(_ type: PacketType, _ ack: PublishAcknowledgement) -> (
        reply: MQTTPacket?, completion: Completion?
    ) {
        let id = ack.packetIdentifier
        guard inUse.contains(id), let index = outbound.firstIndex(where: { $0.packetIdentifier == id }) else {
            // §4.3.3: PUBREC for an unknown id is answered so that the server can finish.
            if type == .pubrec {
                return (
                    .pubrel(PublishAcknowledgement(packetIdentifier: id, reasonCode: .packetIdentifierNotFound)), nil
                )
            }
            return (nil, nil)
        }
        switch (type, outbound[index]) {
        case (.puback, .publish(let publish)) where publish.qos == .atLeastOnce:
            removeFlow(at: index)
            return (nil, .completed(packetIdentifier: id, reasonCode: ack.reasonCode))
        case (.pubrec, .publish(let publish)) where publish.qos == .exactlyOnce:
            if ack.reasonCode.isFailure {
                removeFlow(at: index)
                return (nil, .completed(packetIdentifier: id, reasonCode: ack.reasonCode))
            }
            outbound[index] = .release(packetIdentifier: id)
            return (.pubrel(PublishAcknowledgement(packetIdentifier: id)), nil)
        case (.pubrec, .release):
            return (.pubrel(PublishAcknowledgement(packetIdentifier: id)), nil)
        case (.pubcomp, .release):
            removeFlow(at: index)
            return (nil, .completed(packetIdentifier: id, reasonCode: ack.reasonCode))
        default:
            return (nil, nil)
        }
    }

    private mutating func removeFlow(at index: Int) {
        inUse.remove(outbound.remove(at: index).packetIdentifier)
    }

    /// What the client does with its outbound flows when the server answers CONNACK.
    public enum SessionLostPolicy: Sendable, Hashable {
        /// Forget flows the server no longer knows; their `publish` calls fail with
        /// ``MQTTClientError/Code-swift.enum/sessionLost``. The default, as in rumqttc and Paho.
        case dropInflight
        /// Send the unfinished messages again as new publications (DUP = 0).
        case republish
    }

    /// Resumes after CONNACK (MQTT 5.0 §4.4).
    /// - With `sessionPresent`, every unacknowledged PUBLISH is sent again with DUP = 1 and its
    ///   packet identifier, and every PUBREL again.
    /// - Without, inbound QoS 2 state is forgotten and outbound flows are dropped or republished
    ///   as new, by `policy`.
    /// - A PUBLISH in `neverSent` never reached the server: it is neither re-sent nor dropped, and
    ///   keeps its place, to go first-time when its turn comes.
    /// - Returns: the packets to send, in order, and the identifiers of dropped flows.
    mutating func resume(
        sessionPresent: Bool,
        policy: SessionLostPolicy,
        neverSent: Set<UInt16> = []
    ) -> (packets: [MQTTPacket], dropped: [UInt16]) {
        let sent = outbound.filter { !neverSent.contains($0.packetIdentifier) }
        if sessionPresent {
            let packets: [MQTTPacket] = sent.map { flow in
                switch flow {
                case .publish(var publish):
                    publish.duplicate = true
                    return .publish(publish)
                case .release(let id):
                    return .pubrel(PublishAcknowledgement(packetIdentifier: id))
                }
            }
            return (packets, [])
        }
        inboundQoS2 = []
        var packets: [MQTTPacket] = []
        var dropped: [UInt16] = []
        for flow in sent {
            switch (policy, flow) {
            case (.republish, .publish(var publish)):
                publish.duplicate = false
                packets.append(.publish(publish))
            default:
                // A released QoS 2 message already reached the server; under `.dropInflight`
                // nothing the server may have seen goes again.
                dropped.append(flow.packetIdentifier)
            }
        }
        let gone = Set(dropped)
        outbound.removeAll { gone.contains($0.packetIdentifier) }
        inUse.subtract(gone)
        return (packets, dropped)
    }

    /// Records an inbound QoS 2 PUBLISH. Returns `false` for a re-sent one already acknowledged,
    /// which must be acknowledged again but not delivered twice.
    mutating func receivedExactlyOnce(_ id: UInt16) -> Bool {
        inboundQoS2.insert(id).inserted
    }

    /// Ends an inbound QoS 2 flow on PUBREL.
    mutating func released(_ id: UInt16) {
        inboundQoS2.remove(id)
    }
}
