//! `.dockerignore` with Docker's own matching rules (moby/patternmatcher).
