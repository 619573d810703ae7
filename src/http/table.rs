// The route table: every (method, path) the API serves and its handler, in registration order.
// It is the one list: `routes()` registers exactly these with actix (`http/mod.rs`), and
// tests/openapi.rs includes this file to compare them with the OpenAPI document, which must
// describe each of them (and nothing else). A path may appear once per method.
//
// The hot route first: actix tries resources in order, `{id}` ones by regex.
//
// (Plain comments only: the file is also `include!`d.)

macro_rules! api_routes {
    ($then:ident) => {
        $then! {
            POST "/api/flows/{id}/run" => flows::run,
            GET "/api/health" => system::health,
            GET "/api/openapi.json" => openapi::document,
            GET "/api/diagnostics" => system::diagnostics,
            GET "/api/audit" => system::audit,
            GET "/api/packs" => packs::list,
            GET "/api/packs/pending" => packs::pending,
            POST "/api/packs/scan" => packs::scan,
            POST "/api/packs/import" => pack_import::import,
            POST "/api/packs/apply" => pack_import::apply,
            GET "/api/packs/{id}" => packs::get,
            GET "/api/packs/{id}/status" => packs::status,
            POST "/api/packs/{id}/approve" => packs::approve,
            POST "/api/packs/{id}/reject" => packs::reject,
            DELETE "/api/packs/{id}" => packs::uninstall,
            GET "/api/flows" => flows::list,
            POST "/api/flows/reload" => flows::reload,
            GET "/api/flows/{id}" => flows::get,
            GET "/api/runs" => runs::list,
            GET "/api/runs/{run_id}" => runs::get,
            GET "/api/schedules" => schedules::list,
            POST "/api/network/grant" => network::grant,
            POST "/api/network/revoke" => network::revoke,
            POST "/api/network/check" => network::check,
            GET "/api/network/list" => network::list,
            GET "/api/docker/status" => containers::status,
            GET "/api/containers" => containers::list,
            DELETE "/api/containers/{id}" => containers::remove,
            POST "/api/containers/{id}/start" => containers::start,
            POST "/api/containers/{id}/stop" => containers::stop,
            POST "/api/capability/grants/grant" => grants::grant,
            POST "/api/capability/grants/revoke" => grants::revoke,
            GET "/api/capability/grants" => grants::list,
            POST "/api/secrets/set" => secrets::set,
            POST "/api/secrets/delete" => secrets::delete,
            GET "/api/secrets" => secrets::list,
            POST "/api/stores/create" => stores::create,
            GET "/api/stores" => stores::list,
            POST "/api/capability/candidates/scan" => capability_handlers::scan,
            GET "/api/capability/requests" => capability_handlers::requests,
            POST "/api/capability/requests/{candidate_key}/approve" => capability_handlers::approve,
            POST "/api/capability/requests/{candidate_key}/reject" => capability_handlers::reject,
            GET "/api/capability/blocked" => capability_handlers::blocked,
            POST "/api/capability/blocked/{candidate_key}/unblock" => capability_handlers::unblock,
            POST "/api/pip/candidates/scan" => pip::scan,
            GET "/api/pip/requests" => pip::requests,
            POST "/api/pip/requests/{candidate_key}/approve" => pip::approve,
            POST "/api/pip/requests/{candidate_key}/reject" => pip::reject,
            GET "/api/pip/blocked" => pip::blocked,
            POST "/api/pip/blocked/{candidate_key}/unblock" => pip::unblock,
            GET "/api/routes" => routes::list,
            POST "/api/routes/reload" => routes::reload,
            POST "/api/packs/{id}/lib/run" => extras::lib_run,
            GET "/api/vocab" => extras::vocab,
            GET "/api/skills" => skills::list,
            POST "/api/skills/run" => skills::run,
            GET "/api/skills/runs/{run_id}" => skills::get,
            GET "/api/skills/runs/{run_id}/artifacts/{path:.*}" => skills::artifact,
        }
    };
}

macro_rules! method_path_pairs {
    ($($method:ident $path:literal => $handler:path,)*) => {
        vec![$((stringify!($method), $path)),*]
    };
}

/// Every (method, path) actix serves, methods in capitals.
#[allow(dead_code)] // the binary registers through `api_routes!`; tests/openapi.rs calls this
pub fn served() -> Vec<(&'static str, &'static str)> {
    api_routes!(method_path_pairs)
}
