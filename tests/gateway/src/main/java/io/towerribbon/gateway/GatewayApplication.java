package io.towerribbon.gateway;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.loadbalancer.annotation.LoadBalancerClients;

@SpringBootApplication
// Adds `spring.cloud.loadbalancer.configurations: hints` (see HintsConfiguration);
// without that value every client keeps SCLB's default configuration.
@LoadBalancerClients(defaultConfiguration = HintsConfiguration.class)
public class GatewayApplication {

    public static void main(String[] args) {
        SpringApplication.run(GatewayApplication.class, args);
    }
}
