//! Verify: checks of a built image against the architecture's rules, read natively from its layers.
