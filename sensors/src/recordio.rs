//! RecordIO framing (being written).
