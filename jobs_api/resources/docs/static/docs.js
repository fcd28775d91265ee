// Swagger UI over the service's own /openapi.json; "Authorize" takes a key (or a job's token)
// and "Try it out" then sends it. In a file of its own: the page's policy allows no inline script.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  persistAuthorization: true,
  validatorUrl: null,  // Swagger UI would otherwise show a badge fetched from validator.swagger.io
});
