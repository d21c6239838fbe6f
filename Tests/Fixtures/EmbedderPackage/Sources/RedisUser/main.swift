import LBControlPlane

print(try RedisEndpoint(parsing: "redis://127.0.0.1:6379"))
