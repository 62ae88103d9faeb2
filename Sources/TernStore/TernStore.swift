// What must be durable, as a protocol, plus an in-memory implementation. Filled in by the durable
// sessions issue.
import TernBrokerCore
