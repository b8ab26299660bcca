//! Multi-node tests of the core in an in-process, deterministic world.

mod anti_entropy;
mod cluster;
mod membership;
mod mesh;
mod restore;
mod strong;
mod ttl;
mod world;
