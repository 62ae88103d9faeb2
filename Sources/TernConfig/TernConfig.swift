// The mosquitto.conf-style configuration parser. Filled in by the broker issue.
import TernBroker
