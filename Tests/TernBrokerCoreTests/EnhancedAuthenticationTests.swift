import NIOCore
import TernCodec
import Testing

@testable import TernBrokerCore

/// A two-round challenge/response method for tests: "hello" is answered with the challenge
/// "prove", and "proof" then succeeds with "welcome".
struct ChallengeAuthentication: EnhancedAuthentication {
    let method = "TEST-CHALLENGE"
    func makeExchange(clientID: String) -> any AuthenticationExchange { Exchange() }

    struct Exchange: AuthenticationExchange {
        var challenged = false
        mutating func step(_ data: ByteBuffer?) -> AuthenticationStep {
            let text = data.map { String(buffer: $0) }
            if !challenged, text == "hello" {
                challenged = true
                return .challenge(ByteBuffer(string: "prove"))
            }
            if challenged, text == "proof" { return .success(ByteBuffer(string: "welcome")) }
            return .failure
        }
    }
}

func authProperties(_ method: String, _ data: String?) -> Properties {
    var properties = Properties()
    try! properties.append(.authenticationMethod(method))
    if let data { try! properties.append(.authenticationData(ByteBuffer(string: data))) }
    return properties
}

/// MQTT 5.0 §4.12: enhanced authentication through CONNECT and AUTH.
@Suite("Enhanced authentication (§4.12)")
struct EnhancedAuthenticationTests {
    func machine() -> ConnectionStateMachine {
        ConnectionStateMachine(topicAliasMaximum: 10, authenticators: [ChallengeAuthentication()])
    }

    @Test("§4.12 an unknown method is refused with 0x8C")
    func unknownMethod() {
        var machine = machine()
        let connect = Connect(clientIdentifier: "c", properties: authProperties("NOPE", nil))
        #expect(machine.received(.connect(connect)) == .refuseConnect(ConnAck(reasonCode: .badAuthenticationMethod)))
    }

    @Test("§4.12 challenge and response, then CONNECT goes on with the method and final data for CONNACK")
    func challengeResponse() {
        var machine = machine()
        let connect = Connect(clientIdentifier: "c", properties: authProperties("TEST-CHALLENGE", "hello"))
        #expect(
            machine.received(.connect(connect))
                == .reply(
                    .auth(
                        Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "prove"))
                    )
                )
        )
        let answer = machine.received(
            .auth(Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "proof")))
        )
        guard case .forwardAuthenticated(let forwarded, let method, let data) = answer else {
            Issue.record("not forwarded: \(answer)")
            return
        }
        #expect(method == "TEST-CHALLENGE")
        #expect(data == ByteBuffer(string: "welcome"))
        #expect(forwarded.properties.authenticationMethod == nil)
        #expect(machine.protocolVersion == .v5)
    }

    @Test("§4.12 a wrong response is refused with 0x87")
    func wrongResponse() {
        var machine = machine()
        _ = machine.received(
            .connect(Connect(clientIdentifier: "c", properties: authProperties("TEST-CHALLENGE", "hello")))
        )
        let answer = machine.received(
            .auth(Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "guess")))
        )
        #expect(answer == .refuseConnect(ConnAck(reasonCode: .notAuthorized)))
    }

    @Test("§4.12 any packet but AUTH during authentication is a protocol error")
    func packetDuringAuthentication() {
        var machine = machine()
        _ = machine.received(
            .connect(Connect(clientIdentifier: "c", properties: authProperties("TEST-CHALLENGE", "hello")))
        )
        guard case .close(let code, _) = machine.received(.pingreq) else {
            Issue.record("accepted")
            return
        }
        #expect(code == .protocolError)
    }

    @Test("§4.12.1 re-authentication with AUTH 0x19 runs a new exchange and ends with AUTH 0x00")
    func reauthentication() {
        var machine = machine()
        _ = machine.received(
            .connect(Connect(clientIdentifier: "c", properties: authProperties("TEST-CHALLENGE", "hello")))
        )
        _ = machine.received(
            .auth(Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "proof")))
        )
        #expect(
            machine.received(
                .auth(Auth(reasonCode: .reAuthenticate, properties: authProperties("TEST-CHALLENGE", "hello")))
            )
                == .reply(
                    .auth(
                        Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "prove"))
                    )
                )
        )
        #expect(
            machine.received(
                .auth(Auth(reasonCode: .continueAuthentication, properties: authProperties("TEST-CHALLENGE", "proof")))
            ) == .reply(.auth(Auth(reasonCode: .success, properties: authProperties("TEST-CHALLENGE", "welcome"))))
        )
        guard
            case .close(let code, _) = machine.received(
                .auth(Auth(reasonCode: .reAuthenticate, properties: authProperties("OTHER", nil)))
            )
        else {
            Issue.record("accepted")
            return
        }
        #expect(code == .protocolError)
    }

    @Test("without a configured method, AUTH is a protocol error")
    func authWithoutMethod() {
        var machine = ConnectionStateMachine(topicAliasMaximum: 10)
        _ = machine.received(.connect(Connect(clientIdentifier: "c")))
        guard
            case .close(let code, _) = machine.received(
                .auth(Auth(reasonCode: .reAuthenticate, properties: authProperties("X", nil)))
            )
        else {
            Issue.record("accepted")
            return
        }
        #expect(code == .protocolError)
    }
}
