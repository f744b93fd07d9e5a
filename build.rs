include!("stages/build.rs");
