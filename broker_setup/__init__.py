"""RabbitMQ topology as data, its declaration, and the local broker node."""
