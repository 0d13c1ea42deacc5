//! The storage tiers of the cache, behind one trait, and their layering.
//!
//! A [`Tier`] holds images by key: [`local::LocalTier`] (records in the local store, whose image
//! must still be in the engine and carry the key label) and [`registry::RegistryTier`] (an OCI
//! registry, images tagged by key). [`Layered`] reads the local tier first, then the remote ones
//! in order, and fills the local tier from a remote hit, as sccache's `MultiLevelStorage` and
//! turborepo's `CacheMultiplexer` do. A remote tier that cannot answer (down, garbage) is a
//! warning and a miss, never the end of a run.
//!
//! The tiers only look up, fetch and store: the run decides when (a fetched image is verified
//! before the local tier is filled, a built one before any tier stores it).

pub mod local;
pub mod registry;

use crate::digest::ImageKey;
use crate::execute::LocalImage;
use crate::record::Entry;
use crate::Result;

pub use local::LocalTier;
pub use registry::RegistryTier;

/// What is looked up: one image at one key.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub service: &'a str,
    pub image: &'a str,
    pub key: &'a ImageKey,
}

/// A tier holds the key's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The image id, when the image is already in the engine.
    pub image_id: Option<String>,
    /// Where it is, for messages (`the local cache`, a registry reference).
    pub location: String,
    /// How long its build took, when the tier knows.
    pub duration_ms: Option<u64>,
    /// The manifest digest a registry's key tag resolved to: what is checked, pulled and used.
    pub digest: Option<String>,
    /// The trusted key that signed it (a registry with `[trust] keys`).
    pub signed_by: Option<String>,
}

/// A tier does not hold the key's image, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// Nothing is recorded under the key.
    NotRecorded,
    /// A record names an image that is gone from the engine.
    ImageGone { image_id: String },
    /// The image found under the key carries another key label (or none): never used.
    Mislabelled {
        image_id: Option<String>,
        found: Option<String>,
    },
    /// The tier has no entry under the key.
    NotFound,
    /// An entry whose signatures no trusted key vouches for: never used (`reference` names the
    /// key tag and its digest).
    Untrusted { reference: String, why: String },
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Hit),
    Miss(Miss),
}

/// A storage tier of the cache.
pub trait Tier: Sync {
    /// What the tier is, for messages.
    fn describe(&self) -> String;
    /// Whether the tier holds the key's image, and why not.
    fn lookup(&self, want: &Want<'_>) -> Result<Lookup>;
    /// Brings `hit` (what [`Tier::lookup`] found) into the engine; returns the image there.
    fn fetch(&self, want: &Want<'_>, hit: &Hit) -> Result<LocalImage>;
    /// Keeps a verified image under its key. `Ok(None)` when the tier takes nothing (read-only);
    /// otherwise what was done, for the report.
    fn store(&self, want: &Want<'_>, entry: &Entry<'_>) -> Result<Option<String>>;
}

/// The outcome of a layered search.
#[derive(Debug, Default)]
pub struct Search {
    /// The first tier (0 is the local one) holding the key, and its hit.
    pub found: Option<(usize, Hit)>,
    /// Tiers whose entry under the key carries another key label: nothing is stored over it.
    pub refused: Vec<usize>,
    /// Tiers that could not answer, or refused an entry, said as warnings.
    pub warnings: Vec<String>,
    /// Entries refused for their signatures: the key tag (with its digest) and why.
    pub untrusted: Vec<(String, String)>,
}

/// The local tier, then the remote ones in order.
pub struct Layered<'a> {
    pub local: &'a LocalTier<'a>,
    pub remotes: Vec<&'a dyn Tier>,
}

impl<'a> Layered<'a> {
    pub fn new(local: &'a LocalTier<'a>, remotes: Vec<&'a dyn Tier>) -> Layered<'a> {
        Layered { local, remotes }
    }

    /// The tier at `level` (0: local).
    pub fn tier(&self, level: usize) -> Option<&dyn Tier> {
        if level == 0 {
            Some(self.local)
        } else {
            self.remotes.get(level - 1).copied()
        }
    }

    /// How many tiers there are (never none: the local one is always there).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        1 + self.remotes.len()
    }

    /// Looks the key up in the tiers from `from` on, in order, stopping at the first hit. The
    /// local tier's errors are errors; a remote tier's are warnings and a miss.
    pub fn search(&self, want: &Want<'_>, from: usize) -> Result<Search> {
        let mut s = Search::default();
        for level in from..self.len() {
            let Some(tier) = self.tier(level) else { break };
            let found = match tier.lookup(want) {
                Ok(l) => l,
                Err(e) if level > 0 => {
                    s.warnings.push(format!(
                        "{} cannot be read ({e}); {} is looked for elsewhere",
                        tier.describe(),
                        want.service
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match found {
                Lookup::Hit(hit) => {
                    s.found = Some((level, hit));
                    break;
                }
                Lookup::Miss(Miss::Mislabelled { found, .. }) if level > 0 => {
                    s.warnings.push(format!(
                        "{} holds an image for {} labelled with key {}, not {}: refused",
                        tier.describe(),
                        want.service,
                        found.as_deref().unwrap_or("(none)"),
                        want.key.to_hex()
                    ));
                    s.refused.push(level);
                }
                Lookup::Miss(Miss::Untrusted { reference, why }) => {
                    s.warnings.push(format!(
                        "{} holds `{reference}` for {}, refused: {why}",
                        tier.describe(),
                        want.service,
                    ));
                    s.untrusted.push((reference, why));
                }
                Lookup::Miss(_) => {}
            }
        }
        Ok(s)
    }

    /// Fills the local tier with an image fetched from a remote one and verified since.
    pub fn fill(&self, want: &Want<'_>, entry: &Entry<'_>) -> Result<()> {
        self.local.store(want, entry).map(|_| ())
    }

    /// Stores a verified image in every remote tier but those `skip` names; returns what was
    /// done, and warnings for tiers that failed (a remote tier is a best effort).
    pub fn share(
        &self,
        want: &Want<'_>,
        entry: &Entry<'_>,
        skip: &[usize],
    ) -> (Vec<String>, Vec<String>) {
        let (mut done, mut warnings) = (Vec::new(), Vec::new());
        for (i, tier) in self.remotes.iter().enumerate() {
            if skip.contains(&(i + 1)) {
                continue;
            }
            match tier.store(want, entry) {
                Ok(Some(what)) => done.push(what),
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "could not store {} in {}: {e}",
                    want.service,
                    tier.describe()
                )),
            }
        }
        (done, warnings)
    }
}
