use actix_web::http::header;
use actix_web::test::TestRequest;

use crate::support::spawn_app;

#[test]
fn base_endpoint_answers_with_the_api_version() {
    let app = spawn_app();
    let user = app.user_with_registry_password("ann");
    for uri in ["/v2/", "/v2"] {
        let response = app.send(
            TestRequest::get()
                .uri(uri)
                .insert_header((header::AUTHORIZATION, user.basic())),
        );
        assert_eq!(response.status.as_u16(), 200, "{uri}");
        assert_eq!(
            response.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{uri}"
        );
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.json(), serde_json::json!({}));
    }
}
