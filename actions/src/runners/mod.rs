//! Runners beyond Rhai: how actions written for StackStorm's other runners run under squall.
//! One file per runner; each turns an action's parameters into a process (or, for
//! `http-request`, one HTTP request) and its outcome into st2's result shape.

pub mod http;
pub mod python;
pub mod shell;
