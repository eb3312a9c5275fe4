//! Shared code of the fuzz targets.

pub mod cases;
pub mod checks;
