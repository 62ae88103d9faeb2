// The broker's protocol logic without I/O: connection state machines, sessions, the topic tree,
// retained messages, wills and expiry. Filled in by the broker issue.
import TernCodec
