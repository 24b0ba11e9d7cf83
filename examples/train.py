"""A plain module: it does not import sandrun. examples/invoke_file.py runs it remotely."""


def train_model(epochs: int, learning_rate: float = 0.01) -> dict[str, float]:
    loss = 1.0
    for _ in range(epochs):
        loss *= 1 - learning_rate
    return {"epochs": epochs, "final_loss": round(loss, 4)}
