//! A custom agent: the built-in plugins plus two third-party ones. This is all an
//! outside crate needs: fill a registry, hand it to `vadvisor::main_with`.

fn main() {
    let mut registry = vadvisor::builtins::registry();
    qemu_process_collector::register(&mut registry);
    jsonl_sink::register(&mut registry);
    std::process::exit(vadvisor::main_with(registry));
}
