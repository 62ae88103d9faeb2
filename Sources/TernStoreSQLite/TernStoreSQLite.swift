// The embedded default store: one SQLite file in `persistence_location`. Filled in by the durable
// sessions issue.
import TernStore
