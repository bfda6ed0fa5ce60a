//! Operating the relay: the binary and its commands, configuration, management, status, several nodes, crashes and faults, the load tool.

mod admin;
mod bench_tool;
mod cluster;
mod management;
mod operations;
mod reliability;
mod server;
