//! Server-rendered web pages of buildgrid.
