package io.towerribbon.eurekaserversecure;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.netflix.eureka.server.EnableEurekaServer;
import org.springframework.context.annotation.Bean;
import org.springframework.security.config.Customizer;
import org.springframework.security.config.annotation.web.builders.HttpSecurity;
import org.springframework.security.web.SecurityFilterChain;

/**
 * A Eureka server behind https and HTTP basic auth. The certificate, key,
 * optional client CA and the one user come from the command line and the
 * environment (see application.yml and scripts/eureka-server start-secure).
 */
@SpringBootApplication
@EnableEurekaServer
public class SecureEurekaServerApplication {

    public static void main(String[] args) {
        SpringApplication.run(SecureEurekaServerApplication.class, args);
    }

    /**
     * Every request needs basic auth; CSRF is off for the REST API, as the
     * Spring Cloud Netflix docs advise for Eureka ("Securing The Eureka
     * Server"): Eureka clients send no CSRF token.
     */
    @Bean
    SecurityFilterChain eurekaSecurity(HttpSecurity http) throws Exception {
        http.csrf(csrf -> csrf.ignoringRequestMatchers("/eureka/**"))
            .authorizeHttpRequests(auth -> auth.anyRequest().authenticated())
            .httpBasic(Customizer.withDefaults());
        return http.build();
    }
}
