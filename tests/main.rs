//! End-to-end tests of the `squall` binary: one test binary, one module per area.

mod alertmanager;
mod alias_cli;
mod aliases_api;
mod amqp;
mod broker;
mod browser;
mod capacity;
mod cdos;
mod chat_sim;
mod chatops;
mod cli;
mod cli_api;
mod console;
mod docker;
mod durability;
mod harness;
mod marathon_actions;
mod ops;
mod pack_install;
mod pack_test;
mod python_actions;
mod server;
mod shell_actions;
mod st2_cli;
mod st2_packs;
mod workflows;
