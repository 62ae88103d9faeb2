// The async/await MQTT client. Filled in by the client issue.
import TernCodec
