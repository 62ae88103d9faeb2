// The runnable, embeddable broker on SwiftNIO. Filled in by the broker issue.
import TernBrokerCore
import TernStore
