//! Renders repsim run and suite results (Markdown, HTML, JUnit XML, JSON). Not started yet.

pub use sim;
