//! The site state machine (being written).
