//! Build triggers, the build queue and Docker engine builds.
