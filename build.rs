include!("stages/torch/build/rpath.rs");

fn main() {
    libtorch_rpath();
}
