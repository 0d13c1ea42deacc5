//! pnpm lockfiles (lockfileVersion 6.0 and 9.0, pnpm 8 to 11): parsing and pruning to a closure of importers.
