"""Everything that speaks Kalshi: units, auth, REST, WebSocket, wire decoding, books, fees and the
local Kalshi-compatible exchange. Nothing in this package knows about actors."""
