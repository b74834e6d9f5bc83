package io.towerribbon.userapi;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.http.MediaType;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

@SpringBootApplication
@RestController
public class UserApiApplication {

    private final String instanceId;

    public UserApiApplication(@Value("${eureka.instance.instance-id}") String instanceId) {
        this.instanceId = instanceId;
    }

    public static void main(String[] args) {
        SpringApplication.run(UserApiApplication.class, args);
    }

    /** Identifies the instance that served the request: its Eureka instance id. */
    @GetMapping(path = "/whoami", produces = MediaType.TEXT_PLAIN_VALUE)
    public String whoami() {
        return instanceId;
    }
}
