//! The `vadvisor` agent binary with the built-in plugins.

fn main() {
    std::process::exit(vadvisor::main_with(vadvisor::builtins::registry()));
}
