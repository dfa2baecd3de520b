fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("description");
            for (_, x) in m.iter_mut() {
                strip(x)
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                strip(x)
            }
        }
        _ => {}
    }
}
fn main() {
    for (name, crd) in tektite_api::crd::all() {
        let mut v = serde_json::to_value(&crd).unwrap();
        strip(&mut v);
        let y = tektite_api::yaml::to_yaml(&v);
        println!("{name} {}", y.len());
    }
}
