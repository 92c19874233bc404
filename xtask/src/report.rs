//! Report shapes shared by lab and analyze.
