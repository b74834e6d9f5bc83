package io.towerribbon.authservice;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.core.env.Environment;
import org.springframework.http.MediaType;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

@SpringBootApplication
@RestController
public class AuthServiceApplication {

    private final Environment env;

    public AuthServiceApplication(Environment env) {
        this.env = env;
    }

    public static void main(String[] args) {
        SpringApplication.run(AuthServiceApplication.class, args);
    }

    /** Identifies the instance that served the request: {@code auth-service:<port>}. */
    @GetMapping(path = "/whoami", produces = MediaType.TEXT_PLAIN_VALUE)
    public String whoami() {
        return "auth-service:" + env.getProperty("local.server.port");
    }
}
